/*
 * core/src/peft.c — helpers shared by PEFT strategies (see explora/peft.h).
 */
#include <string.h>

#include "explora/peft.h"

ex_status ex_peft_block_mask(const int64_t *items, int n, int64_t depth, uint8_t *mask, const char *what, ex_err *err) {
    memset(mask, 0, (size_t)depth);
    for (int i = 0; i < n; i++) {
        int64_t b = items[i] < 0 ? items[i] + depth : items[i];
        EX_ENSURE(b >= 0 && b < depth, err, EX_E_CONFIG,
                  "%s: block %lld does not exist in a model of %lld blocks (use 0..%lld, or -1 for the last).", what,
                  (long long)items[i], (long long)depth, (long long)depth - 1);
        mask[b] = 1;
    }
    return EX_OK;
}
