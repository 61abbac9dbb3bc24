/* peer_common.h - the CLI, clock and output shared by the C peer drivers.
 *
 *   <driver> ff <n>         tasks_per_s=<float>
 *   <driver> future <n>     tasks_per_s=<float>   (or skip=<reason>)
 *   <driver> roundtrip <n>  p50_ns=<int> p99_ns=<int>
 *
 * One line on stdout, so bench/run.sh can interleave these programs with
 * poolkit's own bench and read every peer the same way. Each driver only
 * supplies the pool-specific part (struct peer_ops), so the clock and the
 * percentile code cannot differ between peers. */
#ifndef PEER_COMMON_H
#define PEER_COMMON_H

#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <semaphore.h>
#include <time.h>

/* Untimed round trips before the timed ones: pools that start threads
 * lazily (GLib, libuv) must not charge thread creation to the first one. */
#define PEER_RT_WARMUP 200

static inline int64_t peer_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* How a round-trip waiter learns its task ran, for pools with no
 * completion handle of their own: the same POSIX semaphore for each of
 * them (a futex; no syscall on post when nobody sleeps), so the figures
 * differ by pool and not by the wait primitive each driver picked. */
static sem_t peer_rt_sem;
static inline void peer_rt_post(void) { sem_post(&peer_rt_sem); }
static inline void peer_rt_wait(void)
{
    while (sem_wait(&peer_rt_sem) != 0)
        ;   /* EINTR only */
}

struct peer_ops {
    /* Create a 2-worker pool, submit n no-op tasks one call each, return
     * once all have run. The caller's clock includes pool creation. */
    void (*ff)(long n);
    void (*future)(long n);     /* NULL: print skip=future_skip */
    const char *future_skip;
    /* Round trips: rt_open makes an idle 2-worker pool, rt_one submits one
     * task and returns when it has run, rt_close tears the pool down. */
    void (*rt_open)(void);
    void (*rt_one)(void);
    void (*rt_close)(void);
};

static int peer_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array: the smallest sample with at
 * least p% of the samples at or below it. */
static int64_t peer_pct(const int64_t *s, long n, int p)
{
    long k = (n * p + 99) / 100;
    return s[k > 0 ? k - 1 : 0];
}

static int peer_main(int argc, char **argv, const struct peer_ops *ops)
{
    char *end = NULL;
    long n = argc == 3 ? strtol(argv[2], &end, 10) : 0;
    if (argc != 3 || *end != '\0' || n <= 0) {
        fprintf(stderr, "usage: %s ff|future|roundtrip <n>\n", argv[0]);
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "ff") || !strcmp(c, "future")) {
        void (*run)(long) = !strcmp(c, "ff") ? ops->ff : ops->future;
        if (!run) {
            printf("skip=%s\n", ops->future_skip);
            return 0;
        }
        int64_t t0 = peer_now_ns();
        run(n);
        int64_t t1 = peer_now_ns();
        printf("tasks_per_s=%.1f\n", (double)n * 1e9 / (double)(t1 - t0));
        return 0;
    }
    if (!strcmp(c, "roundtrip")) {
        int64_t *s = malloc((size_t)n * sizeof *s);
        if (!s) {
            perror("malloc");
            return 1;
        }
        sem_init(&peer_rt_sem, 0, 0);
        ops->rt_open();
        for (int i = 0; i < PEER_RT_WARMUP; i++)
            ops->rt_one();
        for (long i = 0; i < n; i++) {
            int64_t t0 = peer_now_ns();
            ops->rt_one();
            s[i] = peer_now_ns() - t0;
        }
        ops->rt_close();
        qsort(s, (size_t)n, sizeof *s, peer_cmp_i64);
        printf("p50_ns=%lld p99_ns=%lld\n", (long long)peer_pct(s, n, 50),
               (long long)peer_pct(s, n, 99));
        free(s);
        return 0;
    }
    fprintf(stderr, "%s: unknown case '%s'\n", argv[0], c);
    return 2;
}

#endif
