/*
 * tests/gpu_emu/race_check.cpp — races between the blocks of one kernel launch, for the GPU emulator's
 * race-checking plugin (gpu_emu_cuda_racecheck).
 *
 * The emulator runs a launch's blocks one after another, so a race between blocks often cannot change
 * its result there: two blocks adding into one element without atomics give the same sum in either
 * order, while on a device their read-modify-writes overlap and one update is lost. The backend's
 * kernels use no atomics and no inter-block signalling, so within one launch no byte of device memory
 * may be written by one block and read or written by another. This file checks exactly that (by byte:
 * a device stores 2-byte bf16 values without touching their neighbours, so two blocks writing the two
 * halves of a 4-byte word do not race).
 *
 * The kernel sources of that plugin are compiled with GCC's -fsanitize=thread, which calls a hook
 * before every load and store; this file supplies those hooks (there is no ThreadSanitizer runtime in
 * the plugin). A hook outside a launch, or on memory that is not device memory (stacks, shared
 * memory), returns at once. For device memory, each byte has a shadow (device_memory.cpp):
 * the launch and block that last wrote it and that last read it (or "several blocks"). Then:
 *   - a block reading a word another block wrote in this launch, or writing a word another block read
 *     in this launch, stops the run with the launch site, both blocks and the allocation;
 *   - two blocks writing one word is remembered, and at the end of the launch it is reported unless
 *     the word still holds what the first block stored: several blocks storing the same value (a
 *     "found a bad index" flag, cuda_gather.cu) is a benign race.
 * Races between the threads of one block are the scheduler's concern (gpu_emu.cpp: warps run ahead to
 * the next barrier, and EXPLORA_GPU_EMU_ORDER=reverse).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "hip/hip_runtime_api.h"
#include "race_check.h"

namespace {

constexpr uint32_t kSeveral = 0xFFFFFFFFu; /* several blocks read the word */

struct ww_conflict {
    uintptr_t byte;
    uint32_t first_block, second_block;
    unsigned char value;
};

struct race_state {
    bool active = false;
    uint32_t epoch = 0; /* launches so far: the current one while active */
    uint32_t block = 0; /* linear index of the running block */
    const char *file = "";
    int line = 0;
    std::vector<ww_conflict> conflicts;
    uintptr_t own_lo[2] = {0, 0}, own_bytes[2] = {0, 0}; /* the launch's own memory: stacks, shared memory */
    unsigned long long checked = 0; /* device bytes checked, over the process */
};

race_state rs;

/* Stop the run: the running block `did` something to a byte that block `other` `other_did` in this launch. */
[[noreturn]] void report(const char *did, uintptr_t byte, const char *other_did, uint32_t other) {
    size_t offset = 0, bytes = 0;
    emu_device_allocation_of((const void *)byte, &offset, &bytes);
    char who[48];
    if (other == kSeveral) snprintf(who, sizeof who, "other blocks");
    else snprintf(who, sizeof who, "block %u", other);
    fprintf(stderr,
            "gpu emulator: race in the kernel launched at %s:%d: block %u %s a byte that %s %s in the same launch "
            "(address %p, offset %zu of a %zu-byte allocation); blocks are not ordered within a launch\n",
            rs.file, rs.line, rs.block, did, who, other_did, (void *)byte, offset, bytes);
    abort();
}

inline void on_access(const void *p, size_t size, bool write) {
    if (!rs.active || size == 0) return;
    const uintptr_t a = (uintptr_t)p;
    if (a - rs.own_lo[0] < rs.own_bytes[0] || a - rs.own_lo[1] < rs.own_bytes[1]) return;
    /* not device memory: return. An access never straddles two allocations (past an allocation's data pages
     * lies its guard page), so the bytes' shadows follow the first's. */
    emu_race_shadow *s = emu_device_race_shadow(a);
    if (!s) return;
    for (uintptr_t w = a; w < a + size; w++, s++) {
        rs.checked++;
        if (!write) {
            if (s->w_epoch == rs.epoch && s->w_block != rs.block) report("reads", w, "wrote", s->w_block);
            if (s->r_epoch != rs.epoch) s->r_epoch = rs.epoch, s->r_block = rs.block;
            else if (s->r_block != rs.block) s->r_block = kSeveral;
            continue;
        }
        if (s->r_epoch == rs.epoch && s->r_block != rs.block) report("writes", w, "read", s->r_block);
        if (s->w_epoch == rs.epoch && s->w_block != rs.block && rs.conflicts.size() < 256)
            /* what the first block stored (the launch has the allocation open) */
            rs.conflicts.push_back({w, s->w_block, rs.block, *(const unsigned char *)w});
        s->w_epoch = rs.epoch, s->w_block = rs.block;
    }
}

} // namespace

void emu_race_launch_begin(const char *file, int line, const void *own0, size_t own0_bytes, const void *own1,
                           size_t own1_bytes) {
    rs.own_lo[0] = (uintptr_t)own0, rs.own_bytes[0] = own0_bytes;
    rs.own_lo[1] = (uintptr_t)own1, rs.own_bytes[1] = own1_bytes;
    rs.active = true;
    rs.epoch++;
    rs.file = file;
    rs.line = line;
    rs.block = 0;
    rs.conflicts.clear();
}

void emu_race_block(unsigned long long linear) { rs.block = (uint32_t)linear; }

void emu_race_launch_end(void) {
    rs.active = false;
    for (const ww_conflict &c : rs.conflicts) {
        if (*(const unsigned char *)c.byte == c.value) continue; /* the same value stored twice */
        rs.block = c.second_block;
        report("wrote a different value to", c.byte, "also wrote", c.first_block);
    }
    rs.conflicts.clear();
}

extern "C" unsigned long long emu_race_words_checked(void) { return rs.checked; }

/* ---- the hooks GCC's -fsanitize=thread inserts ---- */

extern "C" {

void __tsan_init(void) {}
void __tsan_func_entry(void *pc) { (void)pc; }
void __tsan_func_exit(void) {}
void __tsan_read1(void *p) { on_access(p, 1, false); }
void __tsan_read2(void *p) { on_access(p, 2, false); }
void __tsan_read4(void *p) { on_access(p, 4, false); }
void __tsan_read8(void *p) { on_access(p, 8, false); }
void __tsan_read16(void *p) { on_access(p, 16, false); }
void __tsan_write1(void *p) { on_access(p, 1, true); }
void __tsan_write2(void *p) { on_access(p, 2, true); }
void __tsan_write4(void *p) { on_access(p, 4, true); }
void __tsan_write8(void *p) { on_access(p, 8, true); }
void __tsan_write16(void *p) { on_access(p, 16, true); }
void __tsan_unaligned_read2(const void *p) { on_access(p, 2, false); }
void __tsan_unaligned_read4(const void *p) { on_access(p, 4, false); }
void __tsan_unaligned_read8(const void *p) { on_access(p, 8, false); }
void __tsan_unaligned_read16(const void *p) { on_access(p, 16, false); }
void __tsan_unaligned_write2(void *p) { on_access(p, 2, true); }
void __tsan_unaligned_write4(void *p) { on_access(p, 4, true); }
void __tsan_unaligned_write8(void *p) { on_access(p, 8, true); }
void __tsan_unaligned_write16(void *p) { on_access(p, 16, true); }
void __tsan_read_range(void *p, unsigned long size) { on_access(p, size, false); }
void __tsan_write_range(void *p, unsigned long size) { on_access(p, size, true); }
void __tsan_vptr_read(void **p) { (void)p; }
void __tsan_vptr_update(void **p, void *v) { (void)p, (void)v; }

} /* extern "C" */
