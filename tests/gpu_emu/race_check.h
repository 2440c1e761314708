/*
 * tests/gpu_emu/race_check.h — the GPU emulator's check for races between the blocks of a launch
 * (race_check.cpp), and what it needs from device memory (device_memory.cpp). Built into the
 * race-checking plugin only (EMU_RACECHECK).
 */
#ifndef EXPLORA_GPU_EMU_RACE_CHECK_H
#define EXPLORA_GPU_EMU_RACE_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* The shadow of one byte of device memory: the launch (epoch) and block that last wrote it and last
 * read it (r_block all ones: several blocks). Zero: never touched. */
struct emu_race_shadow {
    uint32_t w_epoch, w_block, r_epoch, r_block;
};

/* device_memory.cpp: the shadow of the byte at `byte`, or nullptr when that is not device memory; and the
 * allocation holding p (offset into it and its size; 0 and 0 when none). */
emu_race_shadow *emu_device_race_shadow(uintptr_t byte);
void emu_device_allocation_of(const void *p, size_t *offset, size_t *bytes);

/* gpu_emu.cpp, around each launch and before each of its blocks. The two spans (the fiber stacks, the
 * dynamic shared memory) are the launch's own memory, which accesses skip without a lookup. */
void emu_race_launch_begin(const char *file, int line, const void *own0, size_t own0_bytes, const void *own1,
                           size_t own1_bytes);
void emu_race_block(unsigned long long linear);
void emu_race_launch_end(void);

/* Device bytes checked so far in this process (a check that checked nothing proves nothing). */
extern "C" unsigned long long emu_race_words_checked(void);

#endif
