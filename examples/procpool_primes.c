/* examples/procpool_primes.c - CPU-bound work on worker processes, with
 * results in input order, a crash that costs one item, and a time limit.
 *
 *   procpool_primes [WORKERS]
 *
 * The tutorial's ProcessPoolExecutor example, in C: count the primes in
 * 16 ranges of numbers with a pk_procpool (one worker per CPU unless
 * WORKERS says otherwise), through pk_map over the pool's executor, so
 * results come back in the order of the input. Then the two things
 * Python's pool cannot do: one range whose task crashes its worker (a
 * segmentation fault, on purpose) fails that item alone with PK_EWORKER
 * and the signal, and the pool replaces the worker and goes on; and a
 * task that would run for a minute is stopped by task_timeout_ms.
 *
 * Exit status: 0 when everything behaves as described, 1 otherwise. */
#include <poolkit/procpool.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RANGES 16
#define SPAN 200000u  /* numbers per range */
#define CRASH_AT 11   /* the range whose task crashes, in the second run */

/* A range of numbers to look at: [lo, lo + SPAN). */
struct range {
    uint64_t lo;
    int crash;        /* the task crashes its worker */
};

static int
is_prime(uint64_t n)
{
    if (n < 2)
        return 0;
    for (uint64_t d = 2; d * d <= n; d++)
        if (n % d == 0)
            return 0;
    return 1;
}

/* The named task: runs in a worker process, gets a struct range's bytes,
 * returns the count as 8 bytes. */
static int
count_primes(const void *data, size_t len, pk_future *self, pk_result *out,
             pk_error *err)
{
    struct range r;
    uint64_t *count;

    (void)self;
    if (len != sizeof r)
        return pk_error_set(err, PK_EINVAL, 0, "want a struct range");
    memcpy(&r, data, sizeof r);
    if (r.crash)
        raise(SIGSEGV); /* as a bug would: the worker dies */
    count = malloc(sizeof *count);
    if (!count)
        return PK_ENOMEM;
    *count = 0;
    for (uint64_t n = r.lo; n < r.lo + SPAN; n++)
        *count += (uint64_t)is_prime(n);
    out->value = count;
    out->len = sizeof *count;
    out->free_fn = free;
    return 0;
}

/* A task that would run for a minute. */
static int
spin(const void *data, size_t len, pk_future *self, pk_result *out,
     pk_error *err)
{
    volatile uint64_t x = 0;
    time_t end = time(NULL) + 60;

    (void)data;
    (void)len;
    (void)self;
    (void)out;
    (void)err;
    while (time(NULL) < end)
        x++;
    return 0;
}

/* pk_map's input: the ranges, read one at a time. */
struct input {
    struct range r[RANGES];
    int next;
};

static int
next_range(void *user, pk_task *t)
{
    struct input *in = user;

    if (in->next == RANGES)
        return 1;
    t->name = "count_primes";
    t->data = &in->r[in->next];
    t->len = sizeof in->r[0];
    in->next++;
    return 0;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Maps the ranges over ex; returns how many items failed, or -1 when
 * the map itself broke or an item failed in an unexpected way. */
static int
run(pk_executor *ex, int crash)
{
    struct input in = { .next = 0 };
    pk_map *m;
    pk_result res;
    pk_error e;
    size_t idx;
    int rc, failed = 0;
    double t0 = now_s();
    uint64_t total = 0;

    for (int i = 0; i < RANGES; i++)
        in.r[i] = (struct range){ (uint64_t)i * SPAN, crash && i == CRASH_AT };
    if (pk_map_create(&m, ex, next_range, &in, NULL) != 0)
        return -1;
    while ((rc = pk_map_next(m, &res, &idx, &e)) != 1) {
        if (rc == 0) {
            uint64_t c;
            memcpy(&c, res.value, sizeof c);
            res.free_fn(res.value);
            total += c;
            printf("  [%2zu] %8llu..%-8llu %5llu primes\n", idx,
                   (unsigned long long)in.r[idx].lo,
                   (unsigned long long)(in.r[idx].lo + SPAN - 1),
                   (unsigned long long)c);
        } else if (idx != PK_MAP_NO_INDEX && rc == PK_EWORKER) {
            printf("  [%2zu] failed: %s (%s)\n", idx, pk_err_name(rc), e.msg);
            failed++;
        } else {
            printf("  the map failed: %s (%s)\n", pk_err_name(rc), e.msg);
            pk_map_destroy(m);
            return -1;
        }
    }
    pk_map_destroy(m);
    printf("  %llu primes below %u in %.2f s\n", (unsigned long long)total,
           RANGES * SPAN, now_s() - t0);
    return failed;
}

int
main(int argc, char **argv)
{
    pk_procpool_options o = { .task_timeout_ms = 500 };
    pk_registry *reg;
    pk_procpool *pp;
    pk_executor *ex;
    pk_procpool_stats st;
    pk_future *f;
    pk_error e;
    int ok = 1, rc;

    if (argc > 1)
        o.max_workers = (size_t)atoi(argv[1]);
    if (pk_registry_create(&reg) != 0 ||
        pk_registry_register(reg, "count_primes", count_primes) != 0 ||
        pk_registry_register(reg, "spin", spin) != 0)
        return 1;
    o.registry = reg;
    rc = pk_procpool_create(&pp, &o);
    if (rc) {
        fprintf(stderr, "pk_procpool_create: %s\n", pk_strerror(rc));
        return 1;
    }
    pk_procpool_executor(pp, &ex);

    printf("16 ranges on worker processes, results in input order:\n");
    ok &= run(ex, 0) == 0;
    printf("again, with range %d's task crashing its worker:\n", CRASH_AT);
    ok &= run(ex, 1) == 1;

    printf("a task that would spin for a minute, task_timeout_ms 500:\n");
    if (pk_procpool_submit(pp, "spin", NULL, 0, &f) != 0)
        return 1;
    rc = pk_future_get(f, 10000, NULL, &e);
    printf("  %s (%s)\n", pk_err_name(rc), e.msg);
    ok &= rc == PK_ETIMEDOUT;
    pk_future_release(f);

    pk_procpool_stats_get(pp, &st);
    printf("workers started %llu, retired %llu; tasks completed %llu, "
           "died %llu, timed out %llu\n",
           (unsigned long long)st.workers_started,
           (unsigned long long)st.workers_retired,
           (unsigned long long)st.completed, (unsigned long long)st.died,
           (unsigned long long)st.timed_out);
    pk_executor_destroy(ex);
    pk_procpool_destroy(pp);
    pk_registry_destroy(reg);
    return ok ? 0 : 1;
}
