/* tests/support/prng.h - a seeded PRNG for tests, header-only.
 *
 * Stress tests draw every random choice from a pk_prng seeded from one
 * 64-bit seed, so a failing run can be replayed: the test prints the seed
 * and PK_SEED=<seed> runs the same per-thread sequences again (thread
 * interleavings still differ; the operations each thread tries do not).
 *
 * The generator is xoshiro256** (Blackman and Vigna), seeded through
 * splitmix64 so that nearby seeds (seed + thread index) give unrelated
 * streams. Not thread-safe: one pk_prng per thread. pk_prng_hash mixes a
 * value statelessly, for hooks that run on any thread and draw from a
 * shared atomic counter instead. */
#ifndef PK_TEST_PRNG_H
#define PK_TEST_PRNG_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct pk_prng {
    uint64_t s[4];
} pk_prng;

/* splitmix64: one step of the mixer; also a good stateless hash. */
static inline uint64_t
pk_prng_hash(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline void
pk_prng_seed(pk_prng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        seed = pk_prng_hash(seed + (uint64_t)i);
        r->s[i] = seed;
    }
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
        r->s[0] = 1; /* the all-zero state is a fixed point */
}

static inline uint64_t
pk_prng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t
pk_prng_next(pk_prng *r)
{
    uint64_t *s = r->s;
    uint64_t out = pk_prng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = pk_prng_rotl(s[3], 45);
    return out;
}

/* Uniform in [0, n); n > 0. The bias of the modulo is below 2^-32 for the
 * small n tests use. */
static inline uint64_t
pk_prng_below(pk_prng *r, uint64_t n)
{
    return n ? pk_prng_next(r) % n : 0;
}

/* True with probability per_mille / 1000. */
static inline int
pk_prng_chance(pk_prng *r, unsigned per_mille)
{
    return pk_prng_below(r, 1000) < per_mille;
}

/* The run's seed: PK_SEED (decimal or 0x hex) if set, else taken from the
 * clock. Printed in the form run_suite.sh picks up ("PK_SEED=..."). */
static inline uint64_t
pk_test_seed(const char *test)
{
    const char *env = getenv("PK_SEED");
    uint64_t seed;

    if (env && *env) {
        char *end;
        errno = 0;
        seed = strtoull(env, &end, 0);
        if (errno || *end) {
            fprintf(stderr, "%s: bad PK_SEED '%s'\n", test, env);
            abort();
        }
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = pk_prng_hash((uint64_t)ts.tv_sec * 1000000000u +
                            (uint64_t)ts.tv_nsec);
    }
    printf("%s: seed %llu (replay with PK_SEED=%llu)\n", test,
           (unsigned long long)seed, (unsigned long long)seed);
    fflush(stdout);
    return seed;
}

/* PK_STRESS_SCALE (a float, default 1): multiplies a stress test's
 * operation count so sanitizer builds stay inside CI time. */
static inline double
pk_test_scale(void)
{
    const char *env = getenv("PK_STRESS_SCALE");
    double s;
    char *end;

    if (!env || !*env)
        return 1.0;
    s = strtod(env, &end);
    if (*end || !(s > 0.0)) {
        fprintf(stderr, "bad PK_STRESS_SCALE '%s', using 1\n", env);
        return 1.0;
    }
    return s;
}

#endif /* PK_TEST_PRNG_H */
