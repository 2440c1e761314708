/*
 * tests/distributed/test_distributed.c — data-parallel pre-training across
 * processes (`mpirun -np 2 explora pretrain ...`), registered only when the
 * build has MPI and an mpirun exists (EXPLORA_MPIRUN):
 *   - MAE: two ranks at per-rank batch B give the same logged losses and the
 *     same final checkpoint (parameters and AdamW moments, within fp32
 *     tolerance) as one rank at batch 2B, with gradient accumulation;
 *   - DINOv2 likewise (global centring, Sinkhorn-Knopp and iBOT normalisation), and
 *     with the two ranks on the CUDA build run by the GPU emulator (device buffers
 *     reduced through host memory) against one rank on the cpu;
 *   - two ranks stopped with stop_at and resumed continue bit-identically;
 *   - a rank whose loss turns NaN makes every rank exit non-zero within a
 *     bounded time, with an error naming the rank, and the previous checkpoint
 *     stays intact.
 * Fashion-MNIST comes from Debian's dataset-fashion-mnist (skipped when absent).
 *
 * Tolerance: per tensor, max |a - b| <= 1e-5 max |a|, except the KEY third of
 * every attention qkv bias: its exact gradient is zero (softmax ignores a
 * constant added to every key), so its gradient is rounding noise that AdamW
 * normalises into full-size steps; a different summation order (two ranks vs
 * one) gives different noise (the DINOv2 teacher inherits it by EMA). Its
 * moments are still compared.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "explora/safetensors.h"
#include "test_support.h"

#define FMNIST "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"

/* Run a shell command line (stderr folded in); returns the exit code (-1: killed by a signal). */
static int sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(char **out, const char *fmt, ...) {
    char args[8192], cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s 2>&1", args);
    FILE *p = popen(cmd, "r");
    if (!p) fail_msg("cannot run %s", cmd);
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + len, 1, cap - 1 - len, p)) > 0) {
        len += got;
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* `explora ARGS` alone, or under `mpirun -np N` (as root too; oversubscribed on small machines), with the shell
 * assignments `env` ("" for none) in front: mpirun's local ranks inherit its environment. */
static int explora_env(char **out, const char *env, int np, const char *args) {
    if (np <= 1) return sh(out, "%s timeout 300 '%s' %s", env, ext_env("EXPLORA_BIN"), args);
    return sh(out, "%s timeout 300 '%s' --allow-run-as-root --oversubscribe -np %d '%s' %s", env,
              ext_env("EXPLORA_MPIRUN"), np, ext_env("EXPLORA_BIN"), args);
}

static int explora(char **out, int np, const char *args) { return explora_env(out, "", np, args); }

#define EXPECT_RC(rc, expr, outp)                                                                     \
    do {                                                                                              \
        int e__rc = (expr);                                                                           \
        if (e__rc != (rc)) fail_msg("%s: exit code %d (expected %d); output:\n%s", #expr, e__rc, (rc), *(outp)); \
    } while (0)

static void need_data(void) {
    if (access(FMNIST, R_OK) != 0) {
        print_message("Fashion-MNIST not installed (package dataset-fashion-mnist); skipping\n");
        skip();
    }
}

static void write_ini(char *path, size_t cap, const char *name, const char *text) {
    ext_tmp_path(path, cap, name);
    ext_write_file(path, text, strlen(text));
}

static double *losses(const char *run_dir, int *n) {
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("no %s", path);
    double *v = calloc(1024, sizeof(double));
    char line[4096];
    *n = 0;
    while (fgets(line, sizeof line, f) && *n < 1024) {
        const char *p = strstr(line, "\"loss\": ");
        if (p) v[(*n)++] = strtod(p + 8, NULL);
    }
    fclose(f);
    return v;
}

static void compare_losses(const char *a, const char *b, int expect, double rtol) {
    int na, nb;
    double *la = losses(a, &na), *lb = losses(b, &nb);
    assert_int_equal(na, expect);
    assert_int_equal(nb, expect);
    for (int i = 0; i < na; i++)
        if (fabs(la[i] - lb[i]) > rtol * fabs(la[i]))
            fail_msg("step %d: loss %.9g (one rank) vs %.9g (two ranks)", i + 1, la[i], lb[i]);
    free(la);
    free(lb);
}

static int is_key_bias(const char *name, int64_t i, int64_t n) {
    size_t len = strlen(name);
    return strncmp(name, "optim.", 6) != 0 && len > 9 && strcmp(name + len - 9, ".qkv.bias") == 0 && i >= n / 3 &&
           i < 2 * n / 3;
}

/* Every tensor of a within rtol of b's (relative to the tensor's largest magnitude); rtol 0: bitwise. */
static void compare_checkpoints(const char *a, const char *b, double rtol) {
    ex_err err;
    ex_st_file *fa, *fb;
    EXT_OK(ex_st_open(&fa, a, &err), &err);
    EXT_OK(ex_st_open(&fb, b, &err), &err);
    assert_int_equal(ex_st_count(fa), ex_st_count(fb));
    assert_true(ex_st_count(fa) > 10);
    double worst = 0.0;
    for (int i = 0; i < ex_st_count(fa); i++) {
        const ex_st_entry *e = ex_st_at(fa, i), *g = ex_st_find(fb, e->name);
        if (!g) fail_msg("%s lacks %s", b, e->name);
        assert_int_equal(e->end - e->begin, g->end - g->begin);
        const int64_t n = (int64_t)((e->end - e->begin) / sizeof(float));
        if (rtol == 0.0) {
            if (memcmp(ex_st_data(fa, e), ex_st_data(fb, g), e->end - e->begin) != 0) fail_msg("%s differs", e->name);
            continue;
        }
        float *x = malloc(sizeof(float) * (size_t)(n ? n : 1)), *y = malloc(sizeof(float) * (size_t)(n ? n : 1));
        EXT_OK(ex_st_read_f32(fa, e, x, n, &err), &err);
        EXT_OK(ex_st_read_f32(fb, g, y, n, &err), &err);
        double mx = 0.0, d = 0.0;
        for (int64_t k = 0; k < n; k++) {
            if (is_key_bias(e->name, k, n)) continue;
            mx = fmax(mx, fabs((double)x[k]));
            d = fmax(d, fabs((double)x[k] - (double)y[k]));
        }
        if (d > rtol * mx + 1e-12) fail_msg("%s: max difference %g, largest magnitude %g", e->name, d, mx);
        if (mx > 0) worst = fmax(worst, d / mx);
        free(x);
        free(y);
    }
    if (rtol > 0) print_message("largest relative difference over all tensors: %.3g\n", worst);
    assert_string_equal(ex_st_metadata(fa, "step"), ex_st_metadata(fb, "step"));
    assert_string_equal(ex_st_metadata(fa, "mask_rng_offset"), ex_st_metadata(fb, "mask_rng_offset"));
    ex_st_close(fa);
    ex_st_close(fb);
}

static const char *k_mae_body =
    "[backend]\nname = cpu\n"
    "[backbone]\nname = vit\npatch = 4\ndim = 32\ndepth = 2\nheads = 2\nchannels = 1\npos_grid = 7\n"
    "pos_embed = sincos\nmask_token = off\nlayerscale = off\nimage_size = 28\n"
    "[peft]\nstack = unfreeze\n[peft.unfreeze]\nall = true\n"
    "[objective]\nname = mae\nimage_size = 28\ndecoder_dim = 16\ndecoder_depth = 1\ndecoder_heads = 2\n"
    "[data]\nname = idx\nimages = " FMNIST "\nlimit = 512\n"
    "[transform]\nmean = 0.286\nstd = 0.353\n"
    "[optim]\nbatch = 16\naccumulate = 2\nsteps = 6\nlr = 2e-3\nwarmup_steps = 2\nclip_grad = 3\n";

/* Two identical configs but for [run] out: <tag>-a and <tag>-b. */
static void two_runs(const char *tag, const char *body, int seed, char ini[2][4096], char dir[2][4096]) {
    static char text[16384];
    for (int k = 0; k < 2; k++) {
        char name[256];
        snprintf(name, sizeof name, "%s-%c", tag, 'a' + k);
        ext_tmp_path(dir[k], sizeof dir[k], name);
        snprintf(text, sizeof text, "[run]\nseed = %d\nout = %s\nlog_every = 1\n%s", seed, dir[k], body);
        snprintf(name, sizeof name, "%s-%c.ini", tag, 'a' + k);
        write_ini(ini[k], sizeof ini[k], name, text);
    }
}

static void test_mae_two_ranks_match_one_rank(void **state) {
    (void)state;
    need_data();
    char ini[2][4096], dir[2][4096], args[9000], ck[2][4200], *out;
    two_runs("dist-mae", k_mae_body, 3, ini, dir);
    snprintf(args, sizeof args, "pretrain '%s' --set optim.batch=16", ini[0]);
    EXPECT_RC(0, explora(&out, 1, args), &out);
    free(out);
    snprintf(args, sizeof args, "pretrain '%s' --set optim.batch=8", ini[1]);
    EXPECT_RC(0, explora(&out, 2, args), &out);
    /* rank 0 alone reports: one summary, one line per step */
    const char *p = strstr(out, "2 processes: effective batch 32");
    if (!p) fail_msg("no effective-batch line:\n%s", out);
    if (strstr(p + 1, "2 processes: effective batch 32")) fail_msg("a rank other than 0 printed:\n%s", out);
    free(out);
    compare_losses(dir[0], dir[1], 6, 1e-5);
    snprintf(ck[0], sizeof ck[0], "%s/checkpoint.safetensors", dir[0]);
    snprintf(ck[1], sizeof ck[1], "%s/checkpoint.safetensors", dir[1]);
    compare_checkpoints(ck[0], ck[1], 1e-5);
}

static void test_two_ranks_resume_bit_identically(void **state) {
    (void)state;
    need_data();
    char ini[2][4096], dir[2][4096], args[9000], ck[2][4200], *out;
    two_runs("dist-resume", k_mae_body, 5, ini, dir);
    snprintf(args, sizeof args, "pretrain '%s' --set optim.batch=8", ini[0]);
    EXPECT_RC(0, explora(&out, 2, args), &out);
    free(out);
    snprintf(args, sizeof args, "pretrain '%s' --set optim.batch=8 --set run.stop_at=3", ini[1]);
    EXPECT_RC(0, explora(&out, 2, args), &out);
    free(out);
    snprintf(args, sizeof args, "pretrain '%s' --set optim.batch=8 --resume", ini[1]);
    EXPECT_RC(0, explora(&out, 2, args), &out);
    free(out);
    snprintf(ck[0], sizeof ck[0], "%s/checkpoint.safetensors", dir[0]);
    snprintf(ck[1], sizeof ck[1], "%s/checkpoint.safetensors", dir[1]);
    compare_checkpoints(ck[0], ck[1], 0.0);
    compare_losses(dir[0], dir[1], 6, 0.0);
}

static const char *k_dinov2_body =
    "[backend]\nname = cpu\n"
    "[backbone]\nname = vit\npatch = 4\ndim = 16\ndepth = 2\nheads = 2\nchannels = 1\npos_grid = 4\n"
    "layerscale = on\nlayerscale_init = 0.1\nimage_size = 16\n"
    "[peft]\nstack = unfreeze\n[peft.unfreeze]\nall = true\n"
    "[objective]\nname = dinov2\nprototypes = 32\nbottleneck = 8\nhead_hidden = 16\nglobal_size = 16\n"
    "local_size = 8\nlocal_crops = 2\nwarmup_teacher_temp_iters = 4\n"
    "koleo_weight = 0\n" /* KoLeo is per rank (as DINOv2): not equal to one rank at 2B */
    "[data]\nname = idx\nimages = " FMNIST "\nlimit = 256\n[transform]\nmean = 0.286\nstd = 0.353\n"
    "[optim]\nbatch = 8\nsteps = 5\nlr = 1e-3\n";

/* DINOv2: one rank at batch 8 on the cpu against two ranks at batch 4 on backend `be2` (shell assignments `env2`
 * in front of mpirun); losses and checkpoint within 1e-5. The two-rank run's output must contain `said` (unless
 * NULL): how it summed the gradients. */
static void dinov2_two_ranks_match_one(const char *tag, const char *env2, const char *be2, const char *said) {
    need_data();
    char ini[2][4096], dir[2][4096], args[9000], ck[2][4200], *out;
    two_runs(tag, k_dinov2_body, 4, ini, dir);
    snprintf(args, sizeof args, "pretrain '%s' --set optim.batch=8", ini[0]);
    EXPECT_RC(0, explora(&out, 1, args), &out);
    free(out);
    snprintf(args, sizeof args, "pretrain '%s' --set optim.batch=4 --set backend.name=%s", ini[1], be2);
    EXPECT_RC(0, explora_env(&out, env2, 2, args), &out);
    if (said && !strstr(out, said)) fail_msg("the two-rank run did not say \"%s\":\n%s", said, out);
    free(out);
    compare_losses(dir[0], dir[1], 5, 1e-5);
    snprintf(ck[0], sizeof ck[0], "%s/checkpoint.safetensors", dir[0]);
    snprintf(ck[1], sizeof ck[1], "%s/checkpoint.safetensors", dir[1]);
    compare_checkpoints(ck[0], ck[1], 1e-5);
}

static void test_dinov2_two_ranks_match_one_rank(void **state) {
    (void)state;
    dinov2_two_ranks_match_one("dist-dino", "", "cpu", "gradients summed over processes through host memory by MPI");
}

/* The same two ranks on the CUDA build run by the GPU emulator (tests/gpu_emu; its folder in
 * EXPLORA_TEST_GPU_EMU_DIR): parameters, gradients and the DINOv2 centring statistics live in device buffers.
 * With MPI the emulated build has NCCL (a stand-in over MPI, tests/gpu_emu/emu_nccl.c), so:
 *   - two emulated GPUs (EXPLORA_GPU_EMU_DEVICES=2; `device` defaults to the local rank): each rank joins the
 *     NCCL communicator and the gradients and centre sums are reduced in device memory by cuda_comm.c;
 *   - one emulated GPU for both ranks: NCCL would refuse (the stand-in does, as NCCL does), so the core sees the
 *     shared device (its PCI bus id) first and both ranks stage through host memory, saying why.
 * Both must match one cpu rank. */
static void emulated_gpu_ranks(const char *tag, int devices, const char *said) {
    const char *dir = getenv("EXPLORA_TEST_GPU_EMU_DIR");
    if (!dir || !dir[0]) {
        print_message("the GPU emulator is not built (-DEXPLORA_GPU_EMU=OFF); skipping\n");
        skip();
    }
    char env[4200];
    snprintf(env, sizeof env, "EXPLORA_PLUGIN_PATH='%s' EXPLORA_GPU_EMU_DEVICES=%d", dir, devices);
    dinov2_two_ranks_match_one(tag, env, "gpu_emu_cuda", said);
}

static void test_dinov2_two_emulated_gpus_match_one_cpu_rank(void **state) {
    (void)state;
    emulated_gpu_ranks("dist-dino-emu2", 2, "gradients summed over processes in device memory by the backend's collectives");
}

static void test_dinov2_two_ranks_on_one_emulated_gpu_stage_through_host(void **state) {
    (void)state;
    emulated_gpu_ranks("dist-dino-emu1", 1,
                       "gradients summed over processes through host memory by MPI: ranks 0 and 1 share device "
                       "'pci 0000:01:00.0' on host");
}

/* NCCL reports a failure that strikes a queued collective (a peer that died) only through its asynchronous error:
 * a wait on the stream would otherwise never end. On two emulated GPUs the NCCL stand-in makes the third
 * all-reduce fail that way (EXPLORA_GPU_EMU_NCCL_FAIL_AT); the backend, polling the error while it waits, aborts
 * the communicator and fails, and the job ends at once with NCCL's reason. */
static void test_nccl_async_error_ends_the_job(void **state) {
    (void)state;
    const char *emu = getenv("EXPLORA_TEST_GPU_EMU_DIR");
    if (!emu || !emu[0]) {
        print_message("the GPU emulator is not built (-DEXPLORA_GPU_EMU=OFF); skipping\n");
        skip();
    }
    need_data();
    char ini[2][4096], dir[2][4096], args[9000], env[4300], *out;
    two_runs("dist-nccl-fail", k_dinov2_body, 4, ini, dir);
    snprintf(env, sizeof env, "EXPLORA_PLUGIN_PATH='%s' EXPLORA_GPU_EMU_DEVICES=2 EXPLORA_GPU_EMU_NCCL_FAIL_AT=3", emu);
    snprintf(args, sizeof args, "pretrain '%s' --set optim.batch=4 --set backend.name=gpu_emu_cuda", ini[1]);
    const int rc = explora_env(&out, env, 2, args);
    if (rc == 0 || rc == 124 || rc == -1) fail_msg("exit code %d (expected an error):\n%s", rc, out);
    if (!strstr(out, "a collective failed: remote process exited or there was a network error"))
        fail_msg("no NCCL asynchronous error reported:\n%s", out);
    if (!strstr(out, "The communicator is aborted")) fail_msg("the communicator was not aborted:\n%s", out);
    free(out);
}

/* A one-block MAE on the abi-good stand-in dataset (8 samples, 4 px): runs in milliseconds per step. `log_every`
 * and `optim` (the [optim] lines) vary; writes the config as `name` in the test folder. */
static void write_tiny_mae(char *ini, size_t cap, const char *name, const char *dir, int log_every, const char *optim) {
    char text[8192];
    snprintf(text, sizeof text,
             "[run]\nseed = 1\nout = %s\nlog_every = %d\n"
             "[backend]\nname = cpu\n"
             "[backbone]\nname = vit\npatch = 2\ndim = 8\ndepth = 1\nheads = 2\nchannels = 1\npos_grid = 2\n"
             "pos_embed = sincos\nmask_token = off\nimage_size = 4\n"
             "[peft]\nstack = unfreeze\n[peft.unfreeze]\nall = true\n"
             "[objective]\nname = mae\nimage_size = 4\ndecoder_dim = 8\ndecoder_depth = 1\ndecoder_heads = 2\n"
             "crop_scale = 1.0, 1.0\n"
             "[data]\nname = abi-good\ncount = 8\nchannels = 1\n"
             "[transform]\nmean = 0.5\nstd = 0.5\n"
             "[optim]\n%s",
             dir, log_every, optim);
    write_ini(ini, cap, name, text);
}

static void test_failing_rank_stops_every_rank(void **state) {
    (void)state;
    char ini[4096], dir[4096], ck[4200], args[9000], *out;
    ext_tmp_path(dir, sizeof dir, "dist-nan");
    write_tiny_mae(ini, sizeof ini, "dist-nan.ini", dir, 1, "batch = 2\nsteps = 2\n");
    const char *abi = ext_env("EXPLORA_TEST_ABI_DIR");
    snprintf(args, sizeof args, "pretrain '%s' --plugin-path '%s'", ini, abi);
    EXPECT_RC(0, explora(&out, 2, args), &out); /* clean data: a checkpoint */
    free(out);
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", dir);
    FILE *f = fopen(ck, "rb");
    assert_non_null(f);
    static char good[1 << 20], now[1 << 20];
    size_t good_len = fread(good, 1, sizeof good, f);
    fclose(f);
    /* sample 5 lands on one of the two ranks in the first epoch: that rank's loss is NaN */
    snprintf(args, sizeof args, "pretrain '%s' --plugin-path '%s' --set data.poison=5 --set optim.steps=4", ini, abi);
    int rc = explora(&out, 2, args);
    if (rc == 0 || rc == 124 || rc == -1) fail_msg("exit code %d (expected an error, within the timeout):\n%s", rc, out);
    if (!strstr(out, "rank 0 of 2: the loss is nan") && !strstr(out, "rank 1 of 2: the loss is nan"))
        fail_msg("no error naming the failing rank:\n%s", out);
    free(out);
    f = fopen(ck, "rb");
    assert_non_null(f);
    size_t now_len = fread(now, 1, sizeof now, f);
    fclose(f);
    assert_int_equal(now_len, good_len);
    assert_memory_equal(now, good, good_len);
}

/* A rank that hangs without dying (its data source never answers sample 5, or never opens) holds the other in a
 * collective; neither can return an error. The stall watchdog ([run] stall_timeout_s, here 3 s, running from the
 * trainer's setup) of the stuck rank or of the waiting one ends its process, and mpirun ends the job: an error
 * naming the rank, within seconds, not a hang until the launcher's timeout. */
static void test_hung_rank_stops_every_rank(void **state) {
    (void)state;
    char ini[4096], dir[4096], args[9000], *out;
    ext_tmp_path(dir, sizeof dir, "dist-stall");
    write_tiny_mae(ini, sizeof ini, "dist-stall.ini", dir, 1, "batch = 2\nsteps = 4\n");
    const char *abi = ext_env("EXPLORA_TEST_ABI_DIR");
    snprintf(args, sizeof args, "pretrain '%s' --plugin-path '%s' --set data.stall=5 --set run.stall_timeout_s=3", ini,
             abi);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const int rc = explora(&out, 2, args);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double took = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (rc == 0 || rc == 124 || rc == -1) fail_msg("exit code %d after %.1f s (expected an error):\n%s", rc, took, out);
    if (!strstr(out, "of 2: no training step finished in 3 s"))
        fail_msg("no watchdog message after %.1f s:\n%s", took, out);
    if (took > 120) fail_msg("the job took %.1f s to end", took);
    print_message("a hung rank ended the job after %.1f s (watchdog 3 s), exit code %d\n", took, rc);
    free(out);
    /* the same before the first step: rank 1's data source never opens, while rank 0 waits in the first step */
    snprintf(args, sizeof args, "pretrain '%s' --plugin-path '%s' --set data.stall_open_rank=1 --set run.stall_timeout_s=3",
             ini, abi);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const int rc2 = explora(&out, 2, args);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double took2 = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (rc2 == 0 || rc2 == 124 || rc2 == -1 || took2 > 120 ||
        !strstr(out, "rank 1 of 2: no training step finished in 3 s (since the run started)"))
        fail_msg("exit code %d after %.1f s (expected rank 1's watchdog):\n%s", rc2, took2, out);
    free(out);
}

/* Ctrl-C reaching one rank only (here rank 1, by `timeout -s INT`): every rank stops after the same step, the one
 * whose all-reduce first saw the request, and rank 0 writes that step's checkpoint; no rank is left waiting in a
 * collective the other never joins. */
static void test_interrupt_on_one_rank_stops_every_rank(void **state) {
    (void)state;
    char ini[4096], dir[4096], ck[4200], *out;
    ext_tmp_path(dir, sizeof dir, "dist-int");
    write_tiny_mae(ini, sizeof ini, "dist-int.ini", dir, 100000, "batch = 2\nsteps = 10000000\nwarmup_steps = 0\n");
    const char *abi = ext_env("EXPLORA_TEST_ABI_DIR"), *bin = ext_env("EXPLORA_BIN");
    int rc = sh(&out,
                "timeout 300 '%s' --allow-run-as-root --oversubscribe -np 1 '%s' pretrain '%s' --plugin-path '%s' : "
                "-np 1 timeout --preserve-status -s INT 3 '%s' pretrain '%s' --plugin-path '%s'",
                ext_env("EXPLORA_MPIRUN"), bin, ini, abi, bin, ini, abi);
    if (rc != 0) fail_msg("exit code %d (expected both ranks to stop cleanly):\n%s", rc, out);
    const char *p = strstr(out, "interrupted at step ");
    if (!p) fail_msg("rank 0 did not stop with the interrupted rank:\n%s", out);
    long long step = 0;
    assert_int_equal(sscanf(p, "interrupted at step %lld", &step), 1);
    assert_true(step >= 1 && step < 10000000);
    free(out);
    ex_err err;
    ex_st_file *f;
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", dir);
    EXT_OK(ex_st_open(&f, ck, &err), &err);
    char want[32];
    snprintf(want, sizeof want, "%lld", step);
    assert_string_equal(ex_st_metadata(f, "step"), want);
    ex_st_close(f);
}

/* The core's side of device collectives (rank 0's id broadcast, dispatch to the backend's slots, errors on
 * every rank): comm_device_check under mpirun -np 2. */
static void test_device_collectives_wiring(void **state) {
    (void)state;
    char *out;
    int rc = sh(&out, "timeout 120 '%s' --allow-run-as-root --oversubscribe -np 2 '%s'", ext_env("EXPLORA_MPIRUN"),
                ext_env("EXPLORA_COMM_DEVICE_CHECK"));
    if (rc != 0 || !strstr(out, "comm-device-check rank 0: ok") || !strstr(out, "comm-device-check rank 1: ok"))
        fail_msg("exit code %d:\n%s", rc, out);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_collectives_wiring),
        cmocka_unit_test(test_mae_two_ranks_match_one_rank),
        cmocka_unit_test(test_two_ranks_resume_bit_identically),
        cmocka_unit_test(test_dinov2_two_ranks_match_one_rank),
        cmocka_unit_test(test_dinov2_two_emulated_gpus_match_one_cpu_rank),
        cmocka_unit_test(test_dinov2_two_ranks_on_one_emulated_gpu_stage_through_host),
        cmocka_unit_test(test_nccl_async_error_ends_the_job),
        cmocka_unit_test(test_failing_rank_stops_every_rank),
        cmocka_unit_test(test_interrupt_on_one_rank_stops_every_rank),
        cmocka_unit_test(test_hung_rank_stops_every_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
