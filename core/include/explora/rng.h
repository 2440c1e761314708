/*
 * explora/rng.h — counter-based random numbers (Philox-4x32-10).
 *
 * Every random choice in explora (masks, crops, drop path, init) comes from an
 * ex_rng stream: a 64-bit key derived from (seed, purpose) and a 64-bit
 * counter. Element i of a draw of n values uses the block at counter
 * offset + i, so a draw gives the same numbers whatever the thread count or
 * backend, and the state that must be saved in a checkpoint is two integers.
 *
 * The functions are static inline so that backends (including GPU kernels,
 * through EX_RNG_HD) share one definition of the streams.
 */
#ifndef EXPLORA_RNG_H
#define EXPLORA_RNG_H

#include <math.h>
#include <stdint.h>

#ifndef EX_RNG_HD
#define EX_RNG_HD /* __host__ __device__ under nvcc/hipcc */
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ex_rng {
    uint64_t key;    /* from ex_rng_seed(seed, purpose) */
    uint64_t offset; /* counter: blocks consumed so far */
} ex_rng;

/* Purposes with their own stream, so that e.g. changing the number of views
 * does not shift the masks. Values are stable: they are saved in checkpoints. */
enum {
    EX_RNG_INIT = 1,      /* parameter initialisation */
    EX_RNG_DATA = 2,      /* shuffling, sharding */
    EX_RNG_AUGMENT = 3,   /* crops, flips, colour */
    EX_RNG_MASK = 4,      /* iBOT block masks, MAE random masks */
    EX_RNG_DROPPATH = 5,  /* stochastic depth, dropout */
    EX_RNG_TEST = 99
};

static inline EX_RNG_HD uint64_t ex_splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* A fresh stream for (seed, purpose). */
static inline ex_rng ex_rng_seed(uint64_t seed, uint64_t purpose) {
    ex_rng r;
    r.key = ex_splitmix64(ex_splitmix64(seed) ^ (purpose * 0xD1B54A32D192ED03ull));
    r.offset = 0;
    return r;
}

/* Philox-4x32 with 10 rounds (Salmon et al., SC'11) on a full 128-bit counter and 64-bit key. */
static inline EX_RNG_HD void ex_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u; /* Weyl key schedule */
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The block at 64-bit `counter` of stream `key` (upper counter words zero). */
static inline EX_RNG_HD void ex_philox4x32(uint64_t key, uint64_t counter, uint32_t out[4]) {
    uint32_t c[4] = {(uint32_t)counter, (uint32_t)(counter >> 32), 0u, 0u};
    uint32_t k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
    ex_philox4x32_10(c, k, out);
}

/* Uniform in [0, 1) with 24 random bits (exactly representable in fp32). */
static inline EX_RNG_HD float ex_u32_to_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

/* The i-th uniform of a draw that starts at counter `offset`. */
static inline EX_RNG_HD float ex_rng_uniform_at(uint64_t key, uint64_t offset, uint64_t i) {
    uint32_t w[4];
    ex_philox4x32(key, offset + i, w);
    return ex_u32_to_unit(w[0]);
}

/* The i-th standard normal of a draw (Box-Muller on two words of one block). */
static inline EX_RNG_HD float ex_rng_normal_at(uint64_t key, uint64_t offset, uint64_t i) {
    uint32_t w[4];
    ex_philox4x32(key, offset + i, w);
    double u1 = ((double)(w[0] >> 8) + 1.0) * (1.0 / 16777216.0); /* (0, 1] */
    double u2 = (double)(w[1] >> 8) * (1.0 / 16777216.0);         /* [0, 1) */
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Host-side draws (loaders, mask generators): one value per block, advancing the stream. */
static inline float ex_rng_next_uniform(ex_rng *r) { return ex_rng_uniform_at(r->key, r->offset++, 0); }
static inline uint32_t ex_rng_next_u32(ex_rng *r) {
    uint32_t w[4];
    ex_philox4x32(r->key, r->offset++, w);
    return w[0];
}
/* Uniform integer in [0, n) without modulo bias (n >= 1). */
static inline uint32_t ex_rng_next_below(ex_rng *r, uint32_t n) {
    uint64_t m = (uint64_t)ex_rng_next_u32(r) * n;
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (l < t) {
            m = (uint64_t)ex_rng_next_u32(r) * n;
            l = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_RNG_H */
