/*
 * tests/fuzz/fuzz_image.c — fuzz the image decoders (JPEG, PNG, TIFF) behind
 * ex_image_decode and ex_image_decode_raw. The first byte picks the mode
 * (0, 1 or 3 channels, or raw); the rest is the file.
 */
#include "explora/image.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const int modes[4] = {0, 1, 3, -1};
    int mode = modes[data[0] % 4];
    ex_image img;
    ex_err err;
    ex_status st = mode < 0 ? ex_image_decode_raw(data + 1, size - 1, "fuzz", &img, &err)
                            : ex_image_decode(data + 1, size - 1, "fuzz", mode, &img, &err);
    if (st == EX_OK) ex_image_free(&img);
    return 0;
}
