/*
 * tests/gpu_emu/include/hip/hip_runtime_api.h — the host API of the GPU emulator, under HIP's names.
 *
 * The emulator runs the GPU backend's kernel sources on the CPU (tests only): the HIP build of
 * backends/cuda (EXPLORA_HIP) compiled by the host C/C++ compilers against these headers instead of
 * ROCm's, with kernel launches rewritten by launch_rewrite.c. "Device" memory is host memory that
 * host code outside the emulator cannot touch (device_memory.cpp), every call is synchronous, and
 * there is one device.
 *
 * Only what backends/cuda uses under EXPLORA_HIP is declared. Valid C and C++.
 */
#ifndef EXPLORA_GPU_EMU_HIP_RUNTIME_API_H
#define EXPLORA_GPU_EMU_HIP_RUNTIME_API_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum hipError_t {
    hipSuccess = 0,
    hipErrorInvalidValue = 1,
    hipErrorOutOfMemory = 2,
    hipErrorInvalidConfiguration = 9,
    hipErrorNoDevice = 100,
    hipErrorNotReady = 600,
    hipErrorLaunchFailure = 719,
} hipError_t;

typedef enum hipMemcpyKind {
    hipMemcpyHostToHost = 0,
    hipMemcpyHostToDevice = 1,
    hipMemcpyDeviceToHost = 2,
    hipMemcpyDeviceToDevice = 3,
    hipMemcpyDefault = 4,
} hipMemcpyKind;

typedef struct emu_stream *hipStream_t;
#define hipStreamNonBlocking 0x1

typedef struct hipDeviceProp_t {
    char name[256];
    char gcnArchName[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    size_t sharedMemPerBlockOptin; /* what a kernel may ask for after raising its limit (EMU_MAX_DYNAMIC_SMEM) */
    int warpSize;
    int maxThreadsPerBlock;
    int multiProcessorCount;
    int major, minor;
} hipDeviceProp_t;

const char *hipGetErrorString(hipError_t e);
const char *hipGetErrorName(hipError_t e);
hipError_t hipGetLastError(void);
hipError_t hipGetDeviceCount(int *count);
hipError_t hipSetDevice(int device);
hipError_t hipGetDevice(int *device);
hipError_t hipGetDeviceProperties(hipDeviceProp_t *prop, int device);
/* "0000:BB:00.0", bus BB = device + 1 (at least 13 bytes of room) */
hipError_t hipDeviceGetPCIBusId(char *bus_id, int len, int device);
hipError_t hipMalloc(void **ptr, size_t bytes);
hipError_t hipFree(void *ptr);
hipError_t hipHostMalloc(void **ptr, size_t bytes, unsigned int flags);
hipError_t hipHostFree(void *ptr);
hipError_t hipMemGetInfo(size_t *free_bytes, size_t *total_bytes);
hipError_t hipMemcpyAsync(void *dst, const void *src, size_t bytes, hipMemcpyKind kind, hipStream_t stream);
hipError_t hipMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                            hipMemcpyKind kind, hipStream_t stream);
hipError_t hipMemsetAsync(void *dst, int value, size_t bytes, hipStream_t stream);
hipError_t hipStreamCreateWithFlags(hipStream_t *stream, unsigned int flags);
hipError_t hipStreamSynchronize(hipStream_t stream);
/* hipSuccess: the emulator has run everything queued (copies to the host land, as at a synchronisation) */
hipError_t hipStreamQuery(hipStream_t stream);
hipError_t hipStreamDestroy(hipStream_t stream);

/* The emulator's own: device memory is open to host code only between these (kernels, copies, fills and
 * the library stand-ins bracket their accesses; brackets nest). Elsewhere a touch of it is reported as
 * host code dereferencing a device pointer (device_memory.cpp). */
void emu_device_enter(void);
void emu_device_leave(void);
/* Whether [p, p + bytes) lies inside one device allocation: 1 yes, 0 no, -1 cannot tell (the sanitizer build's
 * device memory is plain heap blocks). For the library stand-ins' checks of the pointers they are given. */
int emu_device_pointer(const void *p, size_t bytes);
/* Device-to-host copies are queued until the stream is synchronised (their host buffers hold NaN bytes until
 * then, so host code that reads one too early sees it); this lands them (device_memory.cpp). */
void emu_stream_drain(void);

#ifdef __cplusplus
}
#endif

#endif
