/*
 * tests/distributed/comm_device_check.c — run under `mpirun -np 2` by
 * test_distributed: the core's side of device collectives (explora/comm.h
 * ex_comm_attach_device and the dispatch of ex_comm_allreduce_sum_f32), with
 * a fake backend whose collective slots record how they are called and sum
 * through the host path. What it checks, on every rank:
 *   - rank 0 alone makes the id; every rank joins with rank 0's bytes, its own
 *     rank and the world size;
 *   - a device all-reduce then goes through the backend's slot (and sums);
 *   - a backend without the slots is not attached and still sums by staging;
 *   - ranks that disagree (one without the slots, or one that does not want them) all stay on the
 *     host path, none waiting in the id broadcast;
 *   - when rank 0 cannot make an id, every rank returns an error (no hang);
 *   - a backend that names its devices (device_key) is not joined when two ranks share one, with a note
 *     naming them, and is joined when each rank has its own or one rank cannot name its device.
 * Prints "comm-device-check rank R: ok" and exits 0, or names the failed check
 * and exits 1. (NCCL itself needs GPUs: scripts/gpu_check.sh.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "explora/comm.h"

typedef struct fake {
    ex_comm *comm; /* the host path the fake's all-reduce uses */
    int ids_made, inits, reduces, fail_id, key_mode;
    int rank_seen, world_seen;
    unsigned char id_seen[64];
    size_t id_len;
} fake;

static ex_status fake_copy(void *ctx, void *dst, const void *src, size_t bytes, ex_copy_kind kind) {
    (void)ctx, (void)kind;
    memmove(dst, src, bytes);
    return EX_OK;
}

static ex_status fake_id(void *ctx, void *id, size_t cap, size_t *len, ex_err *err) {
    fake *f = ctx;
    f->ids_made++;
    if (f->fail_id) EX_FAIL(err, EX_E_DEVICE, "fake: no id today");
    EX_ENSURE(cap >= 40, err, EX_E_INVALID, "fake: %zu bytes of room", cap);
    memset(id, 0, 40);
    snprintf(id, 40, "id-of-rank-0-pid-%ld", (long)getpid());
    *len = 40;
    return EX_OK;
}

static ex_status fake_init(void *ctx, const void *id, size_t len, int rank, int world, ex_err *err) {
    fake *f = ctx;
    EX_ENSURE(len <= sizeof f->id_seen, err, EX_E_INVALID, "fake: id of %zu bytes", len);
    f->inits++;
    memcpy(f->id_seen, id, len);
    f->id_len = len;
    f->rank_seen = rank;
    f->world_seen = world;
    return EX_OK;
}

static ex_status fake_allreduce(void *ctx, float *buf, int64_t n, ex_err *err) {
    fake *f = ctx;
    f->reduces++;
    return ex_comm_allreduce_sum_f32_host(f->comm, buf, n, err);
}

/* device_key: fake.key_mode 0 names one device for every rank, 1 one device per rank, 2 cannot name it on rank 1 */
static int fake_key(void *ctx, char *key, size_t cap) {
    fake *f = ctx;
    const int rank = f->comm->rank;
    if (f->key_mode == 2 && rank == 1) return -1;
    snprintf(key, cap, "fake-gpu-%d", f->key_mode == 1 ? rank : 0);
    return 0;
}

static int rank_g = -1;
#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "comm-device-check rank %d: failed: ", rank_g);      \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, " (%s:%d)\n", __FILE__, __LINE__);                   \
            return 1;                                                            \
        }                                                                        \
    } while (0)

int main(void) {
    ex_comm c;
    ex_err err;
    ex_err_clear(&err);
    if (ex_comm_init(&c, &err) != EX_OK) {
        fprintf(stderr, "comm-device-check: %s\n", err.msg);
        return 1;
    }
    rank_g = c.rank;
    CHECK(c.world == 2, "world %d (run me under mpirun -np 2)", c.world);

    /* 1. a backend with collective slots */
    fake f;
    memset(&f, 0, sizeof f);
    f.comm = &c;
    ex_backend be;
    memset(&be, 0, sizeof be);
    snprintf(be.name, sizeof be.name, "fake");
    be.vt.copy = fake_copy;
    be.vt.comm_unique_id = fake_id;
    be.vt.comm_init = fake_init;
    be.vt.comm_allreduce_sum_f32 = fake_allreduce;
    be.ctx = &f;
    int attached = -1;
    CHECK(ex_comm_attach_device(&c, &be, &attached, &err) == EX_OK, "attach: %s", err.msg);
    CHECK(attached == 1 && c.device == &be, "not attached");
    CHECK(f.ids_made == (c.rank == 0), "%d ids made", f.ids_made);
    CHECK(f.inits == 1 && f.rank_seen == c.rank && f.world_seen == 2, "init %d times as rank %d of %d", f.inits,
          f.rank_seen, f.world_seen);
    CHECK(f.id_len == 40 && strncmp((char *)f.id_seen, "id-of-rank-0-pid-", 17) == 0, "id '%.40s'", f.id_seen);
    /* the same id bytes on every rank: rank 0's, broadcast */
    unsigned char id0[40];
    memcpy(id0, f.id_seen, sizeof id0);
    CHECK(ex_comm_broadcast(&c, id0, sizeof id0, 0, &err) == EX_OK, "broadcast: %s", err.msg);
    CHECK(memcmp(id0, f.id_seen, sizeof id0) == 0, "rank %d joined with '%.40s', rank 0 made '%.40s'", c.rank,
          f.id_seen, id0);
    float v[5];
    for (int i = 0; i < 5; i++) v[i] = (float)(i + 1) * (c.rank ? 10.0f : 1.0f);
    CHECK(ex_comm_allreduce_sum_f32(&c, &be, v, 5, &err) == EX_OK, "all-reduce: %s", err.msg);
    CHECK(f.reduces == 1, "the device all-reduce did not use the backend's slot (%d calls)", f.reduces);
    for (int i = 0; i < 5; i++) CHECK(v[i] == 11.0f * (float)(i + 1), "sum[%d] = %g", i, (double)v[i]);
    c.device = NULL;

    /* 2. a backend without the slots: not attached, device buffers staged through the host */
    ex_backend plain;
    memset(&plain, 0, sizeof plain);
    snprintf(plain.name, sizeof plain.name, "plain");
    plain.vt.copy = fake_copy;
    plain.ctx = &f;
    CHECK(ex_comm_attach_device(&c, &plain, &attached, &err) == EX_OK && attached == 0 && !c.device, "plain attached");
    for (int i = 0; i < 5; i++) v[i] = c.rank ? 2.0f : 0.5f;
    CHECK(ex_comm_allreduce_sum_f32(&c, &plain, v, 5, &err) == EX_OK, "staged all-reduce: %s", err.msg);
    for (int i = 0; i < 5; i++) CHECK(v[i] == 2.5f, "staged sum[%d] = %g", i, (double)v[i]);
    CHECK(f.reduces == 1, "staging called the slot");

    /* 2b. the ranks disagree: rank 1's backend lacks the slots, or rank 1 does not want them (a per-rank
     * setting). Every rank stays on the host path; none waits in the id broadcast. */
    fake h;
    memset(&h, 0, sizeof h);
    h.comm = &c;
    be.ctx = &h;
    CHECK(ex_comm_attach_device(&c, c.rank == 1 ? &plain : &be, &attached, &err) == EX_OK, "mixed: %s", err.msg);
    CHECK(attached == 0 && !c.device && h.ids_made == 0 && h.inits == 0, "attached although rank 1 cannot");
    CHECK(ex_comm_attach_device_if(&c, &be, c.rank == 0, &attached, &err) == EX_OK, "unwanted: %s", err.msg);
    CHECK(attached == 0 && !c.device && h.ids_made == 0 && h.inits == 0, "attached although rank 1 does not want to");
    for (int i = 0; i < 5; i++) v[i] = c.rank ? 3.0f : 0.25f;
    CHECK(ex_comm_allreduce_sum_f32(&c, &be, v, 5, &err) == EX_OK, "host all-reduce: %s", err.msg);
    for (int i = 0; i < 5; i++) CHECK(v[i] == 3.25f, "host sum[%d] = %g", i, (double)v[i]);
    CHECK(h.reduces == 0, "the slot was used without attaching");

    /* 3. rank 0 cannot make an id: both ranks fail, none waits */
    fake g;
    memset(&g, 0, sizeof g);
    g.comm = &c;
    g.fail_id = 1;
    be.ctx = &g;
    ex_err_clear(&err);
    CHECK(ex_comm_attach_device(&c, &be, &attached, &err) != EX_OK, "attach succeeded without an id");
    CHECK(attached == 0 && !c.device && g.inits == 0, "joined without an id");
    CHECK(strstr(err.msg, c.rank == 0 ? "no id today" : "rank 0 could not create") != NULL, "error '%s'", err.msg);

    /* 4. the backend names its device (device_key): ranks on one device of one host are not joined (NCCL refuses
     * that) and every rank's note names them; a device per rank, or a rank that cannot name its device, joins */
    be.vt.device_key = fake_key;
    for (int mode = 0; mode < 3; mode++) {
        fake k;
        memset(&k, 0, sizeof k);
        k.comm = &c;
        k.key_mode = mode;
        be.ctx = &k;
        ex_err_clear(&err);
        CHECK(ex_comm_attach_device(&c, &be, &attached, &err) == EX_OK, "keys %d: %s", mode, err.msg);
        if (mode == 0) {
            CHECK(attached == 0 && !c.device && k.ids_made == 0 && k.inits == 0, "joined on a shared device");
            CHECK(strstr(c.device_note, "ranks 0 and 1 share device 'fake-gpu-0' on host '") != NULL, "note '%s'",
                  c.device_note);
            for (int i = 0; i < 5; i++) v[i] = c.rank ? 1.0f : 0.5f;
            CHECK(ex_comm_allreduce_sum_f32(&c, &be, v, 5, &err) == EX_OK, "shared-device all-reduce: %s", err.msg);
            for (int i = 0; i < 5; i++) CHECK(v[i] == 1.5f, "shared-device sum[%d] = %g", i, (double)v[i]);
            CHECK(k.reduces == 0, "the slot was used on a shared device");
        } else {
            CHECK(attached == 1 && c.device == &be && k.inits == 1 && c.device_note[0] == '\0',
                  "keys %d: attached %d, note '%s'", mode, attached, c.device_note);
        }
        c.device = NULL;
    }
    be.vt.device_key = NULL;

    CHECK(ex_comm_barrier(&c, 60.0, &err) == EX_OK, "barrier: %s", err.msg);
    printf("comm-device-check rank %d: ok\n", c.rank);
    ex_comm_free(&c);
    return 0;
}
