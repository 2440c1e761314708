/*
 * plugins/dinov2/dinov2_sched.c — the teacher schedules (dinov2/utils/utils.py
 * CosineScheduler as used by dinov2/train/train.py).
 *
 * Teacher temperature: linspace(warmup_teacher_temp, teacher_temp, W) with the
 * endpoint included for iterations 0..W-1 (W = warmup_teacher_temp_iters),
 * then teacher_temp (W = 1 gives warmup_teacher_temp at iteration 0).
 * EMA momentum: 1 + 0.5 (m0 - 1)(1 + cos(pi it / T)) for it < T, then 1.0
 * (T = the run's total iterations, m0 = momentum_start).
 */
#include <math.h>

#include "dinov2_internal.h"

double dn_teacher_temp(const dinov2 *d, int64_t it) {
    const int64_t W = d->warmup_temp_iters;
    if (it < 0) it = 0;
    if (it >= W) return d->teacher_temp;
    if (W == 1) return d->warmup_temp;
    return d->warmup_temp + (d->teacher_temp - d->warmup_temp) * (double)it / (double)(W - 1);
}

double dn_momentum(double start, int64_t it, int64_t total) {
    if (it < 0) it = 0;
    if (total <= 0 || it >= total) return 1.0;
    return 1.0 + 0.5 * (start - 1.0) * (1.0 + cos(M_PI * (double)it / (double)total));
}
