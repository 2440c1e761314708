/*
 * tests/gpu_emu/emu_asan.h — EMU_ASAN is defined when the emulator is compiled under AddressSanitizer
 * (GCC's __SANITIZE_ADDRESS__ or Clang's feature test): the fibers then announce their stack switches to
 * it (gpu_emu.cpp), and device memory stays ordinary heap blocks that it checks (device_memory.cpp).
 */
#ifndef EXPLORA_GPU_EMU_ASAN_H
#define EXPLORA_GPU_EMU_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif

#endif
