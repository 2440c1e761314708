/*
 * tests/gpu_emu/device_memory.cpp — the GPU emulator's device memory: allocation, copies, fills, and
 * keeping host code out of it.
 *
 * On a machine with a discrete GPU, host code that dereferences a device pointer crashes (or reads
 * garbage); on the emulator device memory is host memory, so such a bug would pass unseen. Unless
 * EXPLORA_GPU_EMU_PROTECT=0, device allocations are therefore their own memory mappings, kept
 * inaccessible (PROT_NONE) except while the emulator itself works on them: a kernel, a copy or fill,
 * or a library stand-in, each bracketed by emu_device_enter() / emu_device_leave(). Inside such a
 * bracket the first touch of an allocation faults, and the fault handler opens that allocation until
 * the bracket closes. Outside, a touch is reported as host code reading or writing device memory,
 * with the address, the allocation and a backtrace, and the process aborts. Each allocation ends at a
 * guard page (its size rounded up to 256 bytes, the alignment cudaMalloc gives), with one before it,
 * so an access past either end is reported too.
 *
 * The sanitizer build keeps plain heap blocks instead (AddressSanitizer checks every byte of them,
 * which guard pages 256-byte-rounded cannot), so host access to device memory is checked by the
 * Release build's tests.
 *
 * New allocations are filled with 0xFF bytes (NaN as floats), so a kernel that reads what nobody wrote
 * shows NaN rather than a lucky zero. Pinned host memory (hipHostMalloc) is ordinary host memory.
 *
 * Copies from device to host land late. On a GPU, hipMemcpyAsync to the host only queues the copy: the host
 * buffer holds the data once the stream is synchronised, and host code that reads it earlier reads what was
 * there before. The emulator runs a stream's work as it is queued, so such a missing synchronisation would
 * pass here unseen. Instead a device-to-host copy takes the device bytes at once (in stream order), fills the
 * host buffer with 0xFF bytes (NaN), and writes the bytes into it only when the stream is synchronised or
 * destroyed, memory is freed (both synchronise on a GPU), or a later copy of the stream may read host memory.
 */
#include <execinfo.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <utility>
#include <vector>

#include "hip/hip_runtime_api.h"
#ifdef EMU_RACECHECK
#include "race_check.h"
#endif

#include "emu_asan.h"

namespace {

struct region {
    char *map;       /* the whole mapping: guard page, data pages, guard page */
    size_t map_len;
    char *user;      /* what hipMalloc returned */
    size_t bytes;    /* what was asked for */
    char *data;      /* the data pages (user lies inside, ending at the last guard page when rounded) */
    size_t data_len;
    bool open;
#ifdef EMU_RACECHECK
    emu_race_shadow *shadow; /* one per byte of the data pages (race_check.cpp) */
#endif
};

/* A device-to-host copy waiting for the stream's synchronisation: height rows of width bytes for dst, dpitch
 * apart, taken from the device when the copy was queued. */
struct landing {
    char *dst;
    size_t dpitch, width, height;
    std::vector<unsigned char> bytes;
};

struct memory {
    int protect = -1;            /* EXPLORA_GPU_EMU_PROTECT, read at the first allocation */
    std::vector<landing> landings; /* queued device-to-host copies, in stream order */
    std::map<uintptr_t, region> regions; /* by mapping start */
    std::vector<region *> opened; /* opened inside the current bracket */
    int depth = 0;               /* open brackets */
    bool handler = false;        /* installed once (and again when replaced) */
    struct sigaction previous;
    size_t page = 4096;
#ifdef EMU_RACECHECK
    region *last = nullptr; /* the region of the last shadow lookup: most accesses stay in one */
    uintptr_t lo = UINTPTR_MAX, hi = 0; /* the span of all mappings so far (a quick "not device memory") */
    /* Spans between mappings that recent lookups fell into (a kernel's fiber stacks and shared memory lie
     * there, and they take most accesses): a quick "not device memory" without searching the map. Emptied
     * whenever a mapping comes or goes. */
    uintptr_t gap_lo[4] = {0, 0, 0, 0}, gap_hi[4] = {0, 0, 0, 0};
    unsigned gap_next = 0;
#endif
};

memory mem;

#ifdef EMU_RACECHECK
/* Forget the spans between mappings (one came or went). */
void forget_gaps() {
    for (unsigned i = 0; i < 4; i++) mem.gap_lo[i] = mem.gap_hi[i] = 0;
}

#endif

/* The region whose mapping contains p, or nullptr. */
region *find(const void *p) {
    const uintptr_t a = (uintptr_t)p;
    auto it = mem.regions.upper_bound(a);
    if (it == mem.regions.begin()) return nullptr;
    --it;
    region &r = it->second;
    return a < (uintptr_t)r.map + r.map_len ? &r : nullptr;
}

void say(const char *s) {
    const ssize_t n = write(STDERR_FILENO, s, strlen(s));
    (void)n;
}

void on_fault(int sig, siginfo_t *si, void *uc) {
    region *r = find(si->si_addr);
    if (!r) { /* not device memory: whoever handled it before (the default: a crash) */
        if (mem.previous.sa_flags & SA_SIGINFO) {
            mem.previous.sa_sigaction(sig, si, uc);
            return;
        }
        if (mem.previous.sa_handler != SIG_DFL && mem.previous.sa_handler != SIG_IGN) {
            mem.previous.sa_handler(sig);
            return;
        }
        signal(sig, SIG_DFL); /* returning re-runs the access, which now takes the default action */
        return;
    }
    const char *a = (const char *)si->si_addr;
    const bool in_data = a >= r->data && a < r->data + r->data_len;
    if (in_data && mem.depth > 0 && !r->open) { /* the emulator's own access: open the allocation */
        if (mprotect(r->data, r->data_len, PROT_READ | PROT_WRITE) == 0) {
            r->open = true;
            mem.opened.push_back(r);
            return;
        }
    }
    char msg[512];
    if (!in_data || a < r->user || a >= r->user + r->bytes)
        snprintf(msg, sizeof msg,
                 "gpu emulator: an access %s a %zu-byte device allocation at %p (address %p, %lld bytes from its "
                 "start)%s\n",
                 a < r->user ? "before the start of" : "past the end of", r->bytes, (void *)r->user, (void *)a,
                 (long long)(a - r->user), mem.depth > 0 ? ", by a kernel, copy or library call" : "");
    else
        snprintf(msg, sizeof msg,
                 "gpu emulator: host code read or wrote device memory at %p (offset %zu of a %zu-byte allocation at "
                 "%p) outside any kernel, copy or library call: on a GPU this pointer is not host memory\n",
                 (void *)a, (size_t)(a - r->user), r->bytes, (void *)r->user);
    say(msg);
    say("gpu emulator: the faulting code's stack:\n");
    void *frames[48];
    const int n = backtrace(frames, 48);
    backtrace_symbols_fd(frames, n, STDERR_FILENO);
    abort();
}

bool protecting() {
    if (mem.protect < 0) {
#if defined(EMU_ASAN)
        mem.protect = 0;
#elif defined(EMU_RACECHECK)
        mem.protect = 1; /* the race check's shadows belong to the mapped allocations */
#else
        const char *e = getenv("EXPLORA_GPU_EMU_PROTECT");
        mem.protect = !(e && strcmp(e, "0") == 0);
#endif
        const long ps = sysconf(_SC_PAGESIZE);
        if (ps > 0) mem.page = (size_t)ps;
    }
    if (mem.protect) {
        /* (again whenever someone else took SIGSEGV over since: a test harness may install its own per test) */
        struct sigaction now;
        if (mem.handler && sigaction(SIGSEGV, nullptr, &now) == 0 && (now.sa_flags & SA_SIGINFO) &&
            now.sa_sigaction == on_fault)
            return true;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSEGV, &sa, &mem.previous) != 0) {
            fprintf(stderr, "gpu emulator: cannot install the device-memory fault handler; memory unprotected\n");
            mem.protect = 0;
        }
        mem.handler = true;
    }
    return mem.protect;
}

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* A plain heap block of `bytes` (> 0), 256-byte aligned and filled with NaN bytes: pinned host memory, and
 * device memory when it is not protected. */
hipError_t heap_block(void **ptr, size_t bytes) {
    if (posix_memalign(ptr, 256, bytes) != 0) {
        *ptr = nullptr;
        return hipErrorOutOfMemory;
    }
    memset(*ptr, 0xFF, bytes);
    return hipSuccess;
}

/* Queue a device-to-host copy: take the device rows now, poison the host rows until the copy lands. */
hipError_t queue_landing(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height) {
    landing l;
    l.dst = (char *)dst;
    l.dpitch = dpitch;
    l.width = width;
    l.height = height;
    l.bytes.resize(width * height);
    emu_device_enter();
    for (size_t r = 0; r < height; r++) memcpy(l.bytes.data() + r * width, (const char *)src + r * spitch, width);
    emu_device_leave();
    for (size_t r = 0; r < height; r++) memset(l.dst + r * dpitch, 0xFF, width);
    mem.landings.push_back(std::move(l));
    return hipSuccess;
}

} // namespace

extern "C" {

void emu_stream_drain(void) {
    for (const landing &l : mem.landings)
        for (size_t r = 0; r < l.height; r++) memcpy(l.dst + r * l.dpitch, l.bytes.data() + r * l.width, l.width);
    mem.landings.clear();
}

void emu_device_enter(void) {
    if (mem.depth++ == 0 && mem.protect > 0) protecting(); /* our fault handler, in case it was replaced */
}

void emu_device_leave(void) {
    if (mem.depth > 0 && --mem.depth == 0) {
        for (region *r : mem.opened) {
            mprotect(r->data, r->data_len, PROT_NONE);
            r->open = false;
        }
        mem.opened.clear();
    }
}

hipError_t hipMalloc(void **ptr, size_t bytes) {
    if (!ptr) return hipErrorInvalidValue;
    *ptr = nullptr;
    if (bytes == 0) return hipSuccess;
    if (!protecting()) return heap_block(ptr, bytes);
    if (bytes > ((size_t)1 << 40)) return hipErrorOutOfMemory;
    const size_t data_len = round_up(bytes, mem.page), len = data_len + 2 * mem.page;
    void *p = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return hipErrorOutOfMemory;
    region r;
    r.map = (char *)p;
    r.map_len = len;
    r.data = r.map + mem.page;
    r.data_len = data_len;
    r.user = r.data + data_len - round_up(bytes, 256); /* ends where the rounded size ends: at the guard page */
    r.bytes = bytes;
    r.open = false;
    if (mprotect(r.data, data_len, PROT_READ | PROT_WRITE) != 0) {
        munmap(p, len);
        return hipErrorOutOfMemory;
    }
    memset(r.data, 0xFF, data_len);
    mprotect(r.data, data_len, PROT_NONE);
#ifdef EMU_RACECHECK
    void *sh = mmap(nullptr, data_len * sizeof(emu_race_shadow), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (sh == MAP_FAILED) {
        munmap(p, len);
        return hipErrorOutOfMemory;
    }
    r.shadow = (emu_race_shadow *)sh;
#endif
    mem.regions[(uintptr_t)r.map] = r;
#ifdef EMU_RACECHECK
    if ((uintptr_t)r.map < mem.lo) mem.lo = (uintptr_t)r.map;
    if ((uintptr_t)r.map + len > mem.hi) mem.hi = (uintptr_t)r.map + len;
    forget_gaps();
#endif
    *ptr = r.user;
    return hipSuccess;
}

hipError_t hipFree(void *ptr) {
    emu_stream_drain(); /* freeing synchronises */
    if (!ptr) return hipSuccess;
    region *r = mem.protect > 0 ? find(ptr) : nullptr;
    if (!r) {
        free(ptr);
        return hipSuccess;
    }
    if (ptr != r->user) return hipErrorInvalidValue;
    for (size_t i = 0; i < mem.opened.size(); i++)
        if (mem.opened[i] == r) mem.opened.erase(mem.opened.begin() + (long)i--);
#ifdef EMU_RACECHECK
    munmap(r->shadow, r->data_len * sizeof(emu_race_shadow));
    mem.last = nullptr;
    forget_gaps();
#endif
    munmap(r->map, r->map_len);
    mem.regions.erase((uintptr_t)r->map);
    return hipSuccess;
}

int emu_device_pointer(const void *p, size_t bytes) {
    if (mem.protect <= 0) return -1; /* heap blocks: not told apart from host memory */
    const region *r = find(p);
    if (!r) return 0;
    const uintptr_t a = (uintptr_t)p, u = (uintptr_t)r->user;
    return a >= u && bytes <= r->bytes && a - u <= r->bytes - bytes;
}

hipError_t hipHostMalloc(void **ptr, size_t bytes, unsigned int flags) {
    (void)flags;
    if (!ptr) return hipErrorInvalidValue;
    *ptr = nullptr;
    return bytes ? heap_block(ptr, bytes) : hipSuccess;
}

hipError_t hipHostFree(void *ptr) {
    emu_stream_drain(); /* freeing synchronises, and a queued copy may be on its way into ptr */
    free(ptr);
    return hipSuccess;
}

hipError_t hipMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (free_bytes) *free_bytes = (size_t)16 << 30;
    if (total_bytes) *total_bytes = (size_t)16 << 30;
    return hipSuccess;
}

hipError_t hipMemcpyAsync(void *dst, const void *src, size_t bytes, hipMemcpyKind kind, hipStream_t stream) {
    (void)kind;
    (void)stream;
    if (bytes && (!dst || !src)) return hipErrorInvalidValue;
    if (bytes && kind == hipMemcpyDeviceToHost) return queue_landing(dst, bytes, src, bytes, bytes, 1);
    emu_stream_drain(); /* this copy may read host memory that an earlier copy of the stream writes */
    emu_device_enter();
    if (bytes) memmove(dst, src, bytes);
    emu_device_leave();
    return hipSuccess;
}

hipError_t hipMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                            hipMemcpyKind kind, hipStream_t stream) {
    (void)kind;
    (void)stream;
    if (width > dpitch || width > spitch) return hipErrorInvalidValue;
    if (width && height && kind == hipMemcpyDeviceToHost) return queue_landing(dst, dpitch, src, spitch, width, height);
    emu_stream_drain();
    emu_device_enter();
    for (size_t r = 0; r < height; r++) memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    emu_device_leave();
    return hipSuccess;
}

hipError_t hipMemsetAsync(void *dst, int value, size_t bytes, hipStream_t stream) {
    (void)stream;
    if (bytes && !dst) return hipErrorInvalidValue;
    emu_device_enter();
    if (bytes) memset(dst, value, bytes);
    emu_device_leave();
    return hipSuccess;
}

} /* extern "C" */

#ifdef EMU_RACECHECK
emu_race_shadow *emu_device_race_shadow(uintptr_t byte) {
    if (byte < mem.lo || byte >= mem.hi) return nullptr;
    region *r = mem.last;
    if (r && byte >= (uintptr_t)r->data && byte < (uintptr_t)r->data + r->data_len)
        return r->shadow + (byte - (uintptr_t)r->data);
    for (unsigned i = 0; i < 4; i++)
        if (byte >= mem.gap_lo[i] && byte < mem.gap_hi[i]) return nullptr;
    /* the mapping at or before byte, and the one after it */
    auto next = mem.regions.upper_bound(byte);
    r = nullptr;
    uintptr_t gap_lo = 0;
    if (next != mem.regions.begin()) {
        region &before = std::prev(next)->second;
        const uintptr_t end = (uintptr_t)before.map + before.map_len;
        if (byte < end) r = &before;
        gap_lo = end;
    }
    if (!r) { /* between mappings: remember the whole span */
        const unsigned i = mem.gap_next++ % 4;
        mem.gap_lo[i] = gap_lo;
        mem.gap_hi[i] = next == mem.regions.end() ? UINTPTR_MAX : next->first;
        return nullptr;
    }
    if (byte < (uintptr_t)r->data || byte >= (uintptr_t)r->data + r->data_len) return nullptr; /* a guard page */
    mem.last = r;
    return r->shadow + (byte - (uintptr_t)r->data);
}

void emu_device_allocation_of(const void *p, size_t *offset, size_t *bytes) {
    const region *r = find(p);
    *offset = r ? (size_t)((const char *)p - r->user) : 0;
    *bytes = r ? r->bytes : 0;
}
#endif
