/*
 * tests/fuzz/fuzz_common.h — helpers shared by the fuzz harnesses: the
 * libFuzzer entry point declaration and an anonymous in-memory file
 * (memfd) for readers that take a path.
 */
#ifndef EXPLORA_FUZZ_COMMON_H
#define EXPLORA_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Put `data` in a fresh memfd and its "/proc/self/fd/N" path into `path`.
 * Returns the fd (close it when done) or -1. */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t cap) {
    int fd = memfd_create("explora-fuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)w;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

/* Largest tensor a harness reads back (elements), to keep each input fast. */
#define FUZZ_MAX_READ ((int64_t)1 << 20)

#endif /* EXPLORA_FUZZ_COMMON_H */
