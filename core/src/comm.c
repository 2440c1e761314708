/*
 * core/src/comm.c — the communicator (see explora/comm.h): launcher
 * detection, the single-process implementation (identities) and dispatch to
 * the MPI one (comm_mpi.c) when the build has it.
 */
#include "explora/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm_internal.h"

/* The first of the n environment variables that holds a whole number in [lo, 2^20); -1 when none does. */
static int first_env_int(const char *const *vars, size_t n, long lo) {
    for (size_t i = 0; i < n; i++) {
        const char *v = getenv(vars[i]);
        if (!v || !*v) continue;
        char *end = NULL;
        const long x = strtol(v, &end, 10);
        if (end && !*end && x >= lo && x < (1L << 20)) return (int)x;
    }
    return -1;
}

/* First positive integer among the launchers' world-size variables. */
int ex_comm_launched_world(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"};
    const int n = first_env_int(vars, sizeof vars / sizeof *vars, 1);
    if (n > 0) return n;
    /* PMIx (e.g. Open MPI 5 / Slurm) may announce only the rank */
    return getenv("PMIX_RANK") ? 1 : 0;
}

/* First non-negative integer among the launchers' node-local rank variables (0 when none). */
int ex_comm_launched_local_rank(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_LOCAL_RANK", "MPI_LOCALRANKID",
                                       "SLURM_LOCALID", "LOCAL_RANK"};
    const int r = first_env_int(vars, sizeof vars / sizeof *vars, 0);
    return r < 0 ? 0 : r;
}

int ex_comm_have_mpi(void) {
#ifdef EXPLORA_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

ex_status ex_comm_init(ex_comm *c, ex_err *err) {
    memset(c, 0, sizeof *c);
    c->kind = EX_COMM_SINGLE;
    c->rank = 0;
    c->world = 1;
    const int launched = ex_comm_launched_world();
    if (launched == 0) return EX_OK;
#ifdef EXPLORA_HAVE_MPI
    return ex_comm_mpi_init(c, err);
#else
    EX_ENSURE(launched <= 1, err, EX_E_UNSUPPORTED,
              "launched by an MPI launcher with %d processes, but this explora was built without MPI "
              "(install libopenmpi-dev and rebuild); every process would train alone.",
              launched);
    return EX_OK;
#endif
}

void ex_comm_free(ex_comm *c) {
    if (!c) return;
    free(c->scratch);
    c->scratch = NULL;
    c->scratch_cap = 0;
}

int ex_comm_rank(const ex_comm *c) { return c ? c->rank : 0; }
int ex_comm_world(const ex_comm *c) { return c ? c->world : 1; }

static int single(const ex_comm *c) { return !c || c->kind == EX_COMM_SINGLE || c->world <= 1; }

/* The id of a device communicator: NCCL's is 128 bytes; room to spare for other libraries. */
#define EX_COMM_ID_MAX 4096

/* FNV-1a over the machine's name and the device key; 0 is kept for "no key". */
static int64_t device_hash(const char *machine, const char *key) {
    uint64_t h = 1469598103934665603ull;
    for (const char *p = machine; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ 0xFFu) * 1099511628211ull; /* a separator no name contains */
    for (const char *p = key; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h == 0 ? 1 : (int64_t)h;
}

/* Collective: do two ranks run on one device of one machine (the backend's device_key, with the boot id)? Device
 * collectives cannot join them (NCCL refuses two ranks on one GPU), so *shared = 1 and c->device_note names them. */
static ex_status ranks_share_a_device(ex_comm *c, ex_backend *be, int *shared, ex_err *err) {
    *shared = 0;
    c->device_note[0] = '\0';
    char host[256] = "", machine[256] = "", key[128] = "";
    if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
    host[sizeof host - 1] = '\0';
    /* one machine is one running kernel: its boot id (as NCCL tells hosts apart), which containers on one machine
     * share and machines whose containers have one host name do not; the host name where there is none */
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f || !fgets(machine, sizeof machine, f)) snprintf(machine, sizeof machine, "%s", host);
    if (f) fclose(f);
    /* every rank takes part, with or without a name (a rank whose backend cannot name its device gives 0) */
    const int named = be->vt.device_key && be->vt.device_key(be->ctx, key, sizeof key) == 0 && key[0];
    key[sizeof key - 1] = '\0';
    int64_t *all = calloc((size_t)c->world, sizeof *all);
    EX_ENSURE(all, err, EX_E_NOMEM, "comm: out of memory comparing the devices of %d ranks", c->world);
    all[c->rank] = named ? device_hash(machine, key) : 0; /* a sum in which each slot has one contributor: a gather */
    ex_status st = ex_comm_allreduce_sum_i64(c, all, c->world, err);
    int first = -1, second = -1;
    for (int i = 0; st == EX_OK && first < 0 && i < c->world; i++)
        for (int j = i + 1; all[i] != 0 && j < c->world; j++)
            if (all[j] == all[i]) {
                first = i, second = j;
                break;
            }
    free(all);
    EX_CHECK(st);
    if (first < 0) return EX_OK;
    /* the first of the two says which device and host, so every rank's note reads the same */
    char named_by_first[sizeof host + sizeof key];
    if (c->rank == first) snprintf(named_by_first, sizeof named_by_first, "%s\n%s", key, host);
    EX_CHECK(ex_comm_broadcast(c, named_by_first, sizeof named_by_first, first, err));
    named_by_first[sizeof named_by_first - 1] = '\0';
    char *nl = strchr(named_by_first, '\n');
    if (nl) *nl = '\0';
    snprintf(c->device_note, sizeof c->device_note,
             "ranks %d and %d share device '%.80s' on host '%.64s', which NCCL refuses; to sum in device memory, "
             "give each rank of a host its own GPU (no more ranks per host than GPUs, or [backend] device per rank)",
             first, second, named_by_first, nl ? nl + 1 : "?");
    *shared = 1;
    return EX_OK;
}

ex_status ex_comm_attach_device(ex_comm *c, ex_backend *be, int *attached, ex_err *err) {
    return ex_comm_attach_device_if(c, be, 1, attached, err);
}

ex_status ex_comm_attach_device_if(ex_comm *c, ex_backend *be, int want, int *attached, ex_err *err) {
    *attached = 0;
    if (single(c)) return EX_OK;
    /* one rank that cannot or will not keeps every rank on the host path */
    int64_t refuse = !(want && be->vt.comm_init && be->vt.comm_unique_id && be->vt.comm_allreduce_sum_f32);
    EX_CHECK(ex_comm_allreduce_max_i64(c, &refuse, 1, err));
    if (refuse) return EX_OK;
    int shared = 0;
    EX_CHECK(ranks_share_a_device(c, be, &shared, err));
    if (shared) return EX_OK;
    unsigned char id[EX_COMM_ID_MAX];
    memset(id, 0, sizeof id);
    size_t len = 0;
    /* rank 0 makes the id; its status travels with it, so a failure there stops every rank here */
    int64_t status[2] = {0, 0};
    if (c->rank == 0) {
        ex_status st = be->vt.comm_unique_id(be->ctx, id, sizeof id, &len, err);
        status[0] = st == EX_OK ? 0 : 1;
        status[1] = (int64_t)len;
        if (st == EX_OK && (len == 0 || len > sizeof id)) {
            status[0] = 1;
            ex_err_set(err, EX_E_DEVICE, __FILE__, __LINE__, "backend '%s': a device communicator id of %zu bytes",
                       be->name, len);
        }
    }
    EX_CHECK(ex_comm_broadcast(c, status, sizeof status, 0, err));
    if (status[0] != 0) {
        if (c->rank == 0) return err->code ? err->code : EX_E_DEVICE;
        EX_FAIL(err, EX_E_DEVICE, "rank 0 could not create the device communicator of backend '%s'", be->name);
    }
    len = (size_t)status[1];
    EX_CHECK(ex_comm_broadcast(c, id, len, 0, err));
    EX_CHECK(be->vt.comm_init(be->ctx, id, len, c->rank, c->world, err));
    c->device = be;
    *attached = 1;
    return EX_OK;
}

ex_status ex_comm_allreduce_sum_f32(ex_comm *c, ex_backend *be, float *dev, int64_t n, ex_err *err) {
    EX_ENSURE(n >= 0 && (n == 0 || dev), err, EX_E_INVALID, "comm: all-reduce of %lld values at %p", (long long)n,
              (void *)dev);
    if (single(c) || n == 0) return EX_OK;
    if (c->device && c->device->ctx == be->ctx) return be->vt.comm_allreduce_sum_f32(be->ctx, dev, n, err);
#ifdef EXPLORA_HAVE_MPI
    if ((size_t)n > c->scratch_cap) {
        float *p = realloc(c->scratch, sizeof(float) * (size_t)n);
        EX_ENSURE(p, err, EX_E_NOMEM, "comm: out of memory staging %lld values", (long long)n);
        c->scratch = p;
        c->scratch_cap = (size_t)n;
    }
    EX_CHECK(ex_be_download(be, c->scratch, dev, sizeof(float) * (size_t)n, err));
    EX_CHECK(ex_comm_mpi_allreduce_f32(c, c->scratch, n, err));
    return ex_be_upload(be, dev, c->scratch, sizeof(float) * (size_t)n, err);
#else
    (void)be;
    EX_FAIL(err, EX_E_INTERNAL, "comm: a multi-process communicator in a build without MPI");
#endif
}

ex_status ex_comm_allreduce_sum_f32_host(const ex_comm *c, float *host, int64_t n, ex_err *err) {
    EX_ENSURE(n >= 0 && (n == 0 || host), err, EX_E_INVALID, "comm: all-reduce of %lld floats", (long long)n);
    if (single(c) || n == 0) return EX_OK;
#ifdef EXPLORA_HAVE_MPI
    return ex_comm_mpi_allreduce_f32(c, host, n, err);
#else
    EX_FAIL(err, EX_E_INTERNAL, "comm: a multi-process communicator in a build without MPI");
#endif
}

ex_status ex_comm_allreduce_sum_f64(const ex_comm *c, double *host, int64_t n, ex_err *err) {
    EX_ENSURE(n >= 0 && (n == 0 || host), err, EX_E_INVALID, "comm: all-reduce of %lld doubles", (long long)n);
    if (single(c) || n == 0) return EX_OK;
#ifdef EXPLORA_HAVE_MPI
    return ex_comm_mpi_allreduce_f64(c, host, n, err);
#else
    EX_FAIL(err, EX_E_INTERNAL, "comm: a multi-process communicator in a build without MPI");
#endif
}

static ex_status reduce_i64(const ex_comm *c, int64_t *host, int64_t n, int max, ex_err *err) {
    EX_ENSURE(n >= 0 && (n == 0 || host), err, EX_E_INVALID, "comm: all-reduce of %lld integers", (long long)n);
    if (single(c) || n == 0) return EX_OK;
#ifdef EXPLORA_HAVE_MPI
    return ex_comm_mpi_allreduce_i64(c, host, n, max, err);
#else
    (void)max;
    EX_FAIL(err, EX_E_INTERNAL, "comm: a multi-process communicator in a build without MPI");
#endif
}

ex_status ex_comm_allreduce_sum_i64(const ex_comm *c, int64_t *host, int64_t n, ex_err *err) {
    return reduce_i64(c, host, n, 0, err);
}

ex_status ex_comm_allreduce_max_i64(const ex_comm *c, int64_t *host, int64_t n, ex_err *err) {
    return reduce_i64(c, host, n, 1, err);
}

ex_status ex_comm_broadcast(const ex_comm *c, void *host, size_t bytes, int root, ex_err *err) {
    EX_ENSURE(root >= 0 && root < ex_comm_world(c), err, EX_E_INVALID, "comm: broadcast from rank %d of %d", root,
              ex_comm_world(c));
    if (single(c) || bytes == 0) return EX_OK;
#ifdef EXPLORA_HAVE_MPI
    return ex_comm_mpi_broadcast(c, host, bytes, root, err);
#else
    (void)host;
    EX_FAIL(err, EX_E_INTERNAL, "comm: a multi-process communicator in a build without MPI");
#endif
}

ex_status ex_comm_barrier(const ex_comm *c, double timeout_s, ex_err *err) {
    if (single(c)) return EX_OK;
#ifdef EXPLORA_HAVE_MPI
    return ex_comm_mpi_barrier(c, timeout_s, err);
#else
    (void)timeout_s;
    EX_FAIL(err, EX_E_INTERNAL, "comm: a multi-process communicator in a build without MPI");
#endif
}

void ex_comm_abort(const ex_comm *c, int code) {
#ifdef EXPLORA_HAVE_MPI
    if (c && c->kind == EX_COMM_MPI) ex_comm_mpi_abort(c, code);
#else
    (void)c;
#endif
    exit(code);
}
