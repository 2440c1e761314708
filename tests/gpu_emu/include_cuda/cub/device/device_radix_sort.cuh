/*
 * tests/gpu_emu/include_cuda/cub/device/device_radix_sort.cuh — cub::DeviceRadixSort::SortPairs for the
 * GPU emulator (C++), from CUB's documented contract:
 *   - called with d_temp_storage == NULL it only stores the temporary bytes it needs and returns;
 *   - otherwise it sorts num_items (key, value) pairs by bits [begin_bit, end_bit) of the key, ascending
 *     and stable, from the *_in arrays into the *_out arrays, and fails with cudaErrorInvalidValue when
 *     temp_storage_bytes is less than it asked for.
 * It works in the temporary storage it asked for (one 64-bit word per item: the masked key and the
 * input position), so a caller that hands it a buffer smaller than the query said overruns it, which
 * AddressSanitizer reports in the Debug build.
 */
#ifndef EXPLORA_GPU_EMU_CUB_DEVICE_RADIX_SORT_CUH
#define EXPLORA_GPU_EMU_CUB_DEVICE_RADIX_SORT_CUH

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <type_traits>

#include "cuda_runtime_api.h"

namespace cub {

struct DeviceRadixSort {
    template <typename K, typename V>
    static cudaError_t SortPairs(void *d_temp_storage, size_t &temp_storage_bytes, const K *d_keys_in, K *d_keys_out,
                                 const V *d_values_in, V *d_values_out, int num_items, int begin_bit = 0,
                                 int end_bit = (int)(sizeof(K) * 8), cudaStream_t stream = 0) {
        static_assert(std::is_unsigned<K>::value && sizeof(K) <= 4, "the emulator sorts unsigned keys of <= 32 bits");
        (void)stream;
        if (num_items < 0 || begin_bit < 0 || end_bit > (int)(sizeof(K) * 8) || begin_bit > end_bit)
            return cudaErrorInvalidValue;
        const size_t need = (size_t)num_items * sizeof(uint64_t) + 1;
        if (!d_temp_storage) {
            temp_storage_bytes = need;
            return cudaSuccess;
        }
        if (temp_storage_bytes < need) return cudaErrorInvalidValue;
        if (num_items == 0) return cudaSuccess;
        if (!d_keys_in || !d_keys_out || !d_values_in || !d_values_out) return cudaErrorInvalidValue;
        emu_device_enter(); /* the arrays are device memory */
        sort(d_temp_storage, d_keys_in, d_keys_out, d_values_in, d_values_out, num_items, begin_bit, end_bit);
        emu_device_leave();
        return cudaSuccess;
    }

  private:
    template <typename K, typename V>
    static void sort(void *d_temp_storage, const K *d_keys_in, K *d_keys_out, const V *d_values_in, V *d_values_out,
                     int num_items, int begin_bit, int end_bit) {
        const int width = end_bit - begin_bit;
        const uint64_t mask = width >= 32 ? 0xFFFFFFFFull : ((1ull << width) - 1);
        uint64_t *work = (uint64_t *)d_temp_storage;
        for (int i = 0; i < num_items; i++) /* (bits of the key, position): unique, so the sort is stable */
            work[i] = ((((uint64_t)d_keys_in[i] >> begin_bit) & mask) << 32) | (uint64_t)(uint32_t)i;
        std::sort(work, work + num_items);
        for (int i = 0; i < num_items; i++) {
            const uint32_t from = (uint32_t)(work[i] & 0xFFFFFFFFu);
            d_keys_out[i] = d_keys_in[from];
            d_values_out[i] = d_values_in[from];
        }
    }
};

} // namespace cub

#endif
