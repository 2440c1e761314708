/*
 * tests/fuzz/fuzz_config.c — fuzz the INI loader (ex_config_load_string):
 * any bytes must give EX_OK or an error with a message, never a crash. On
 * success the effective config is also written out (to /dev/null).
 */
#include <stdlib.h>
#include <string.h>

#include "explora/config.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    ex_config *cfg = NULL;
    ex_err err;
    if (ex_config_load_string(&cfg, text, "fuzz.ini", &err) == EX_OK) {
        FILE *null = fopen("/dev/null", "w");
        if (null) {
            ex_config_write(cfg, null, &err);
            fclose(null);
        }
        ex_config_free(cfg);
    }
    free(text);
    return 0;
}
