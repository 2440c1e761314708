/*
 * tests/gpu_emu/gpu_emu.cpp — the GPU emulator's runtime: an emulated device (or several alike, which
 * differ only in their PCI bus ids: EXPLORA_GPU_EMU_DEVICES) whose memory is host memory, and a scheduler that runs a kernel's threads as fibers, switching at barriers, warp
 * shuffles and warp-collective operations (the model: include/hip/hip_runtime.h).
 *
 * It exists so that the CUDA/HIP backend's own kernels run in CI on machines without a GPU, through
 * the same parity suite as on a device (tests/CMakeLists.txt). It checks the kernels' logic, their
 * index arithmetic and memory accesses (AddressSanitizer in the Debug build sees device buffers as
 * the heap blocks they are there), barrier and shuffle use, and launch limits. It does not check
 * timing, memory coherence between unsynchronised threads, or the vendor libraries themselves.
 *
 * Device memory (allocation, copies, NaN fill, and keeping host code out of it): device_memory.cpp.
 *
 * The state below is the emulated device's (a GPU runtime's state is per process too): it is used
 * from one thread at a time, as the backend drives its stream from one thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <vector>

#include "hip/hip_runtime.h"

#include "emu_asan.h"
#ifdef EMU_RACECHECK
#include "race_check.h"
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__x86_64__)
#define EMU_X86_64 1
/* emu_switch(save, to): save the callee-saved registers on this stack, store its pointer in *save,
 * and resume the stack `to` (saved the same way, or laid out by fiber_start). The floating-point
 * control words are left alone: no fiber changes them. */
extern "C" void emu_switch(void **save, void *to);
__asm__(".text\n"
        ".p2align 4\n"
        ".hidden emu_switch\n"
        ".globl emu_switch\n"
        ".type emu_switch, @function\n"
        "emu_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size emu_switch, .-emu_switch\n");
#endif

dim3 emu_thread_idx, emu_block_idx, emu_block_dim, emu_grid_dim;
unsigned char *emu_dynamic_smem;

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr unsigned kMaxThreads = 1024;
#ifndef EMU_MAX_DYNAMIC_SMEM
#define EMU_MAX_DYNAMIC_SMEM 65536 /* an AMD CU's LDS; the CUDA build's emulator takes an sm_90's 232448 */
#endif
constexpr size_t kMaxDynamicSmem = EMU_MAX_DYNAMIC_SMEM;

enum { READY, WAITING, DONE };

struct barrier {
    unsigned arrived = 0, gen = 0;
};

struct fiber {
#ifdef EMU_X86_64
    void *sp; /* saved stack pointer (emu_switch) */
#else
    ucontext_t uc;
#endif
    int state = DONE;
    barrier *wait = nullptr;
    unsigned wait_gen = 0;
    unsigned shuffles = 0; /* shuffles this thread has taken part in */
    dim3 tid;
    void *fake_stack = nullptr;
};

struct device {
#ifdef EMU_X86_64
    void *main_sp;
#else
    ucontext_t main;
#endif
    char *stacks = nullptr;
    fiber threads[kMaxThreads];
    unsigned nthreads = 0, live = 0, cur = 0;
    barrier block_bar;
    std::vector<barrier> warp_bar;
    std::vector<unsigned> warp_live;
    uint64_t slot[2][kMaxThreads]; /* shuffle values, by the parity of the shuffle's number */
    unsigned slot_round[2][kMaxThreads];
    emu_body_fn fn = nullptr;
    void *body = nullptr;
    const char *file = "";
    int line = 0;
    int reverse = -1; /* EXPLORA_GPU_EMU_ORDER, read once */
    int devices = 0;  /* EXPLORA_GPU_EMU_DEVICES, read once: how many devices the process sees (1 to 16) */
    int current = 0;  /* hipSetDevice's */
    hipError_t last_error = hipSuccess;
    unsigned long long releases = 0; /* barriers and shuffles released so far (the scheduler's restarts) */
    std::vector<unsigned char> smem;
    struct collective_scratch {
        alignas(16) unsigned char bytes[EMU_COLLECTIVE_BYTES];
    };
    std::vector<collective_scratch> warp_scratch; /* emu_warp_collective's buffer, per warp */
    const void *main_bottom = nullptr;
    size_t main_size = 0;
};

device dev;

[[noreturn]] void die(const char *what) {
    const fiber &f = dev.threads[dev.cur];
    fprintf(stderr,
            "gpu emulator: %s\n  in the kernel launched at %s:%d, block (%u, %u, %u), thread (%u, %u, %u) of "
            "(%u, %u, %u)\n",
            what, dev.file, dev.line, emu_block_idx.x, emu_block_idx.y, emu_block_idx.z, f.tid.x, f.tid.y, f.tid.z,
            emu_block_dim.x, emu_block_dim.y, emu_block_dim.z);
    abort();
}

/* ---- fiber switches (with AddressSanitizer's fiber annotations where it is on) ----
 *
 * On x86-64 a switch saves the callee-saved registers on the old stack and restores them from the
 * new one (emu_switch, below): no system call, unlike swapcontext's signal-mask save, which made the
 * parity suite spend most of its time in the kernel. Elsewhere, ucontext. Each fiber's stack top is
 * offset by a different multiple of 64 bytes: tops 256 KiB apart would share cache sets. */

void fiber_main();

#ifdef EMU_X86_64
void fiber_start(unsigned i) {
    fiber &f = dev.threads[i];
    /* the top of the stack as emu_switch pops it: r15 r14 r13 r12 rbx rbp, then the "return address"
     * fiber_main, entered with the stack aligned as after a call */
    uint64_t *top = (uint64_t *)(dev.stacks + (size_t)(i + 1) * kStackBytes - (size_t)(i % 61) * 64);
#ifdef EMU_ASAN
    /* the frames a finished fiber left at the top of this stack (fiber_main's, emu_switch's) are still
     * poisoned: it switched away from them without returning */
    __asan_unpoison_memory_region(dev.stacks + (size_t)(i + 1) * kStackBytes - 16384, 16384);
#endif
    top -= 2; /* 16-byte aligned slot: fiber_main's address, then padding */
    top[0] = (uint64_t)(uintptr_t)&fiber_main;
    top[1] = 0;
    top -= 6;
    for (int r = 0; r < 6; r++) top[r] = 0;
    f.sp = top;
}
#else
void fiber_start(unsigned i) {
    fiber &f = dev.threads[i];
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = dev.stacks + (size_t)i * kStackBytes;
    f.uc.uc_stack.ss_size = kStackBytes;
    f.uc.uc_link = &dev.main;
    makecontext(&f.uc, fiber_main, 0);
}
#endif

void to_main(fiber &f) {
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(&f.fake_stack, dev.main_bottom, dev.main_size);
#endif
#ifdef EMU_X86_64
    emu_switch(&f.sp, dev.main_sp);
#else
    swapcontext(&f.uc, &dev.main);
#endif
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, &dev.main_bottom, &dev.main_size);
#endif
}

void to_fiber(unsigned i) {
    fiber &f = dev.threads[i];
    dev.cur = i;
    emu_thread_idx = f.tid;
#ifdef EMU_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, dev.stacks + (size_t)i * kStackBytes, kStackBytes);
#endif
#ifdef EMU_X86_64
    emu_switch(&dev.main_sp, f.sp);
#else
    swapcontext(&dev.main, &f.uc);
#endif
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

/* Release a barrier whose waiters are all the threads still running (some returned meanwhile). */
void release_if_complete(barrier &b, unsigned expected) {
    if (b.arrived > 0 && b.arrived >= expected) {
        b.arrived = 0;
        b.gen++;
        dev.releases++;
    }
}

void wait_at(barrier &b, unsigned expected) {
    if (++b.arrived >= expected) { /* the last to arrive releases the others and goes on */
        b.arrived = 0;
        b.gen++;
        dev.releases++;
        return;
    }
    fiber &f = dev.threads[dev.cur];
    f.state = WAITING;
    f.wait = &b;
    f.wait_gen = b.gen;
    to_main(f);
}

void fiber_main() {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &dev.main_bottom, &dev.main_size);
#endif
    dev.fn(dev.body);
    const unsigned i = dev.cur, w = i / EMU_WARP;
    fiber &f = dev.threads[i];
    f.state = DONE;
    dev.live--;
    dev.warp_live[w]--;
    release_if_complete(dev.block_bar, dev.live);
    release_if_complete(dev.warp_bar[w], dev.warp_live[w]);
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, dev.main_bottom, dev.main_size);
#endif
#ifdef EMU_X86_64
    void *dead;
    emu_switch(&dead, dev.main_sp); /* never resumed */
    abort();
#endif
    /* ucontext: returning resumes uc_link, the scheduler */
}

bool check_launch(dim3 grid, dim3 block, size_t smem) {
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    return grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 2147483647u && grid.y <= 65535 &&
           grid.z <= 65535 && threads >= 1 && threads <= kMaxThreads && block.z <= 64 && smem <= kMaxDynamicSmem;
}

void run_block(unsigned nthreads) {
    for (unsigned i = 0; i < nthreads; i++) {
        fiber &f = dev.threads[i];
        f.tid = dim3(i % emu_block_dim.x, i / emu_block_dim.x % emu_block_dim.y,
                     i / (emu_block_dim.x * emu_block_dim.y));
        f.state = READY;
        f.wait = nullptr;
        f.shuffles = 0;
        dev.slot_round[0][i] = dev.slot_round[1][i] = 0;
        fiber_start(i);
    }
    const unsigned warps = (nthreads + EMU_WARP - 1) / EMU_WARP;
    dev.warp_bar.assign(warps, barrier());
    dev.warp_live.assign(warps, 0);
    for (unsigned i = 0; i < nthreads; i++) dev.warp_live[i / EMU_WARP]++;
    dev.block_bar = barrier();
    dev.nthreads = dev.live = nthreads;
    /* Always the first thread (in the run's order) that can go on: after a barrier or shuffle is released
     * the scan starts over, so a warp runs as far as it can, up to a block barrier, before the next warp
     * starts. A warp that reads what another warp writes without a __syncthreads() between them then
     * reads it before it is written (forward order: the lower warps; reverse: the higher ones). */
    unsigned k = 0;
    bool ran = false;
    while (dev.live > 0) {
        if (k == nthreads) {
            if (!ran) die("deadlock: the threads still running wait at different barriers or shuffles");
            k = 0;
            ran = false;
        }
        const unsigned i = dev.reverse ? nthreads - 1 - k : k;
        fiber &f = dev.threads[i];
        k++;
        if (f.state == DONE || (f.state == WAITING && f.wait->gen == f.wait_gen)) continue;
        f.state = READY;
        const unsigned long long releases = dev.releases;
        to_fiber(i);
        ran = true;
        if (dev.releases != releases) k = 0;
    }
}

} // namespace

void emu_run(dim3 grid, dim3 block, size_t smem, hipStream_t stream, emu_body_fn fn, void *body, const char *file,
             int line) {
    (void)stream;
    if (!check_launch(grid, block, smem)) {
        dev.last_error = hipErrorInvalidConfiguration;
        return;
    }
    if (dev.reverse < 0) {
        const char *order = getenv("EXPLORA_GPU_EMU_ORDER");
        dev.reverse = order && strcmp(order, "reverse") == 0;
    }
    if (!dev.stacks) {
        void *p = mmap(nullptr, kMaxThreads * kStackBytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "gpu emulator: cannot map %zu MiB of fiber stacks\n", kMaxThreads * kStackBytes >> 20);
            abort();
        }
        dev.stacks = (char *)p;
    }
    dev.fn = fn;
    dev.body = body;
    dev.file = file;
    dev.line = line;
    dev.smem.assign(smem ? smem : 1, 0xFF);
    emu_dynamic_smem = dev.smem.data();
    emu_device_enter(); /* the kernel may touch device memory */
#ifdef EMU_RACECHECK
    /* the fiber stacks and the dynamic shared memory take most accesses, and are never device memory */
    emu_race_launch_begin(file, line, dev.stacks, kMaxThreads * kStackBytes, dev.smem.data(), dev.smem.size());
#endif
    emu_grid_dim = grid;
    emu_block_dim = block;
    const unsigned nthreads = block.x * block.y * block.z;
    const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
    for (unsigned long long k = 0; k < blocks; k++) {
        const unsigned long long b = dev.reverse ? blocks - 1 - k : k;
        emu_block_idx = dim3((unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                             (unsigned)(b / ((unsigned long long)grid.x * grid.y)));
#ifdef EMU_RACECHECK
        emu_race_block(b);
#endif
        run_block(nthreads);
    }
#ifdef EMU_RACECHECK
    emu_race_launch_end();
#endif
    emu_device_leave();
}

void emu_syncthreads(void) { wait_at(dev.block_bar, dev.live); }

int emu_lane(void) { return (int)(dev.cur % EMU_WARP); }

void emu_warp_sync(void) {
    const unsigned w = dev.cur / EMU_WARP;
    wait_at(dev.warp_bar[w], dev.warp_live[w]);
}

const void *emu_warp_collective(void (*fn)(void *arg, void *scratch), void *arg) {
    const unsigned w = dev.cur / EMU_WARP;
    if (dev.warp_scratch.size() < dev.warp_bar.size()) dev.warp_scratch.resize(dev.warp_bar.size());
    barrier &b = dev.warp_bar[w];
    void *scratch = dev.warp_scratch[w].bytes;
    if (b.arrived + 1 >= dev.warp_live[w]) fn(arg, scratch); /* the last lane in: the whole warp is here */
    wait_at(b, dev.warp_live[w]);
    return scratch;
}

size_t emu_max_dynamic_smem(void) { return kMaxDynamicSmem; }

uint64_t emu_shfl_bits(uint64_t bits, int src) {
    const unsigned i = dev.cur, w = i / EMU_WARP;
    fiber &f = dev.threads[i];
    if (src < 0 || src >= EMU_WARP) die("shuffle from a lane outside the warp");
    const unsigned from = w * EMU_WARP + (unsigned)src;
    /* one barrier per shuffle: values go to the bank of this shuffle's parity, and a lane can only
     * write the same bank again two shuffles on, after every lane has passed the next barrier */
    const unsigned round = ++f.shuffles, bank = round & 1;
    dev.slot[bank][i] = bits;
    dev.slot_round[bank][i] = round;
    wait_at(dev.warp_bar[w], dev.warp_live[w]);
    if (from >= dev.nthreads || dev.slot_round[bank][from] != round) {
        char msg[160];
        snprintf(msg, sizeof msg, "shuffle %u reads lane %d, which %s", round, src,
                 from >= dev.nthreads ? "does not exist (a partial warp)" : "is not at this shuffle (returned or diverged)");
        die(msg);
    }
    return dev.slot[bank][from];
}

void emu_trap(const char *file, int line) {
    char msg[256];
    snprintf(msg, sizeof msg, "__trap() at %s:%d", file, line);
    die(msg);
}

/* ---- host API ---- */

extern "C" {

const char *hipGetErrorString(hipError_t e) {
    switch (e) {
    case hipSuccess: return "no error";
    case hipErrorInvalidValue: return "invalid argument";
    case hipErrorOutOfMemory: return "out of memory";
    case hipErrorInvalidConfiguration: return "invalid launch configuration (grid, block or shared memory)";
    case hipErrorNoDevice: return "no device";
    case hipErrorNotReady: return "device not ready";
    default: return "unknown error";
    }
}

const char *hipGetErrorName(hipError_t e) {
    switch (e) {
    case hipSuccess: return "hipSuccess";
    case hipErrorInvalidValue: return "hipErrorInvalidValue";
    case hipErrorOutOfMemory: return "hipErrorOutOfMemory";
    case hipErrorInvalidConfiguration: return "hipErrorInvalidConfiguration";
    case hipErrorNoDevice: return "hipErrorNoDevice";
    case hipErrorNotReady: return "hipErrorNotReady";
    default: return "hipErrorUnknown";
    }
}

hipError_t hipGetLastError(void) {
    const hipError_t e = dev.last_error;
    dev.last_error = hipSuccess;
    return e;
}

/* The devices a process sees: EXPLORA_GPU_EMU_DEVICES (1 to 16; default 1). They differ only in their PCI bus id
 * (bus = index + 1), which is what lets several processes on one host be placed on distinct emulated GPUs, or on
 * one shared GPU (the NCCL stand-in, emu_nccl.c, refuses that as NCCL does); all of them are the host's memory. */
static int device_count(void) {
    if (dev.devices == 0) {
        const char *v = getenv("EXPLORA_GPU_EMU_DEVICES");
        const int n = v && *v ? atoi(v) : 1;
        if (n < 1 || n > 16) {
            fprintf(stderr, "gpu emulator: EXPLORA_GPU_EMU_DEVICES=%s is not a device count from 1 to 16\n", v);
            abort();
        }
        dev.devices = n;
    }
    return dev.devices;
}

hipError_t hipGetDeviceCount(int *count) {
    if (!count) return hipErrorInvalidValue;
    *count = device_count();
    return hipSuccess;
}

hipError_t hipSetDevice(int device) {
    if (device < 0 || device >= device_count()) return hipErrorInvalidValue;
    dev.current = device;
    return hipSuccess;
}

hipError_t hipGetDevice(int *device) {
    if (!device) return hipErrorInvalidValue;
    *device = dev.current;
    return hipSuccess;
}

hipError_t hipDeviceGetPCIBusId(char *bus_id, int len, int device) {
    if (!bus_id || len < 13 || device < 0 || device >= device_count()) return hipErrorInvalidValue;
    snprintf(bus_id, (size_t)len, "0000:%02x:00.0", device + 1);
    return hipSuccess;
}

hipError_t hipGetDeviceProperties(hipDeviceProp_t *prop, int device) {
    if (!prop || device < 0 || device >= device_count()) return hipErrorInvalidValue;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "GPU emulator on the host");
    snprintf(prop->gcnArchName, sizeof prop->gcnArchName, "emulated wave%d", EMU_WARP);
    prop->totalGlobalMem = (size_t)16 << 30;
    prop->sharedMemPerBlock = kMaxDynamicSmem;
    prop->sharedMemPerBlockOptin = kMaxDynamicSmem;
    prop->warpSize = EMU_WARP;
    prop->maxThreadsPerBlock = kMaxThreads;
    prop->multiProcessorCount = 4;
    prop->major = 9;
    prop->minor = 0;
    return hipSuccess;
}

hipError_t hipStreamCreateWithFlags(hipStream_t *stream, unsigned int flags) {
    (void)flags;
    if (!stream) return hipErrorInvalidValue;
    static int token;
    *stream = (hipStream_t)&token;
    return hipSuccess;
}

hipError_t hipStreamSynchronize(hipStream_t stream) {
    (void)stream;
    emu_stream_drain(); /* device-to-host copies land (device_memory.cpp) */
    return hipSuccess;
}

hipError_t hipStreamQuery(hipStream_t stream) {
    (void)stream;
    emu_stream_drain(); /* the stream is done: its copies have landed */
    return hipSuccess;
}

hipError_t hipStreamDestroy(hipStream_t stream) {
    (void)stream;
    emu_stream_drain();
    return hipSuccess;
}

} /* extern "C" */
