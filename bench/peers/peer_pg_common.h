/* peer_pg_common.h - the timing loops shared by bench/bench_pg.c (poolkit)
 * and the C peer drivers of the pg bench (peer_pg_zdb.c), so every C pool
 * is timed by the same code; peer_pg_psycopg.py repeats it in Python.
 *
 * A driver supplies a struct pgb_ops (how its pool lends a connection,
 * runs `SELECT 1` on it and takes it back) and calls one of:
 *
 *   pgb_overhead(ops, threads, n)
 *       each thread, started together, runs n acquire+release pairs with
 *       no query; prints `pair_ns=<per thread> agg_ns=<all threads>`
 *       (no newline: the driver may add keys) and returns pair_ns;
 *   pgb_contend(ops, threads, ms, timed)
 *       `threads` threads run acquire, SELECT 1, release as fast as they
 *       can: PGB_WARM_MS untimed, then `ms` counted; prints `qps=<float>
 *       fair=<least/most> queries=<int> min_thread=<int> max_thread=<int>`
 *       and, when `timed` (the acquire can wait), `wait_p50_ns=
 *       wait_p99_ns= wait_max_ns=` of every counted acquire, timed around
 *       the call (no newline).
 *
 * Header-only (static functions) because build.sh compiles each peer from
 * one file; needs libpq (the query) and pthreads. */
#ifndef PEER_PG_COMMON_H
#define PEER_PG_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <libpq-fe.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Untimed run before the counted window of pgb_contend: every connection
 * made and every thread past its first wait. */
#define PGB_WARM_MS 200
/* Most threads pgb_overhead and pgb_contend take. */
#define PGB_THREADS_MAX 256

struct pgb_ops {
    void *ctx;
    /* Per-thread state (a lease, a connection); NULL is a failure. */
    void *(*thread_init)(void *ctx, int index);
    void (*thread_fini)(void *ctx, void *ts);
    /* 0, or -1 (the run fails). acquire may wait; release gives back. */
    int (*acquire)(void *ctx, void *ts);
    int (*query)(void *ctx, void *ts); /* SELECT 1 on the held connection */
    void (*release)(void *ctx, void *ts);
};

static inline int64_t
pgb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void
pgb_sleep_ns(int64_t ns)
{
    struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000),
                           .tv_nsec = (long)(ns % 1000000000) };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static _Noreturn void
pgb_die(const char *what)
{
    fprintf(stderr, "%s\n", what);
    exit(1);
}

/* SELECT 1 with PQexec on a connection the caller holds. 0 or -1 (the
 * message on stderr). */
static inline int
pgb_select1(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT 1");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (!ok)
        fprintf(stderr, "SELECT 1 failed: %s", PQerrorMessage(c));
    PQclear(r);
    return ok ? 0 : -1;
}

static int
pgb_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- overhead ------------------------------------------------------------ */

struct pgb_ov_thread {
    const struct pgb_ops *ops;
    pthread_barrier_t *go;
    long n;
    int index;
    int failed;
    int64_t t0, t1;
};

static void *
pgb_ov_main(void *arg)
{
    struct pgb_ov_thread *t = arg;
    const struct pgb_ops *o = t->ops;
    void *ts = o->thread_init(o->ctx, t->index);

    pthread_barrier_wait(t->go);
    if (!ts) {
        t->failed = 1;
        return NULL;
    }
    t->t0 = pgb_now_ns();
    for (long i = 0; i < t->n; i++) {
        if (o->acquire(o->ctx, ts) != 0) {
            t->failed = 1;
            break;
        }
        o->release(o->ctx, ts);
    }
    t->t1 = pgb_now_ns();
    o->thread_fini(o->ctx, ts);
    return NULL;
}

static inline double
pgb_overhead(const struct pgb_ops *ops, int threads, long n)
{
    struct pgb_ov_thread t[PGB_THREADS_MAX];
    pthread_t tid[PGB_THREADS_MAX];
    pthread_barrier_t go;

    if (threads < 1 || threads > PGB_THREADS_MAX)
        pgb_die("pgb_overhead: bad thread count");
    pthread_barrier_init(&go, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) {
        t[i] = (struct pgb_ov_thread){ .ops = ops, .go = &go, .n = n,
                                       .index = i };
        if (pthread_create(&tid[i], NULL, pgb_ov_main, &t[i]) != 0)
            pgb_die("pthread_create failed");
    }
    double per_thread = 0;
    int64_t first = INT64_MAX, last = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        if (t[i].failed)
            pgb_die("an acquire failed in the overhead loop");
        per_thread += (double)(t[i].t1 - t[i].t0) / (double)n;
        if (t[i].t0 < first)
            first = t[i].t0;
        if (t[i].t1 > last)
            last = t[i].t1;
    }
    pthread_barrier_destroy(&go);
    printf("pair_ns=%.1f agg_ns=%.1f", per_thread / threads,
           (double)(last - first) / ((double)n * threads));
    return per_thread / threads;
}

/* ---- contention ---------------------------------------------------------- */

enum { PGB_WARM = 0, PGB_COUNT = 1, PGB_STOP = 2 };

struct pgb_ct_thread {
    const struct pgb_ops *ops;
    pthread_barrier_t *go;
    _Atomic int *phase;
    int index;
    int timed;
    int failed;
    long count;
    int64_t *waits;
    size_t nwaits, cap;
};

static void *
pgb_ct_main(void *arg)
{
    struct pgb_ct_thread *t = arg;
    const struct pgb_ops *o = t->ops;
    void *ts = o->thread_init(o->ctx, t->index);

    pthread_barrier_wait(t->go);
    if (!ts) {
        t->failed = 1;
        return NULL;
    }
    for (;;) {
        int ph = atomic_load_explicit(t->phase, memory_order_relaxed);
        if (ph == PGB_STOP)
            break;
        int64_t a = t->timed ? pgb_now_ns() : 0;
        if (o->acquire(o->ctx, ts) != 0) {
            t->failed = 1;
            break;
        }
        int64_t w = t->timed ? pgb_now_ns() - a : 0;
        int q = o->query(o->ctx, ts);
        o->release(o->ctx, ts);
        if (q != 0) {
            t->failed = 1;
            break;
        }
        if (ph != PGB_COUNT)
            continue;
        t->count++;
        if (!t->timed)
            continue;
        if (t->nwaits == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 4096;
            int64_t *p = realloc(t->waits, cap * sizeof *p);
            if (!p)
                pgb_die("out of memory");
            t->waits = p;
            t->cap = cap;
        }
        t->waits[t->nwaits++] = w;
    }
    o->thread_fini(o->ctx, ts);
    return NULL;
}

static inline void
pgb_contend(const struct pgb_ops *ops, int threads, int ms, int timed)
{
    struct pgb_ct_thread t[PGB_THREADS_MAX];
    pthread_t tid[PGB_THREADS_MAX];
    pthread_barrier_t go;
    _Atomic int phase = PGB_WARM;

    if (threads < 1 || threads > PGB_THREADS_MAX)
        pgb_die("pgb_contend: bad thread count");
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        t[i] = (struct pgb_ct_thread){ .ops = ops, .go = &go,
                                       .phase = &phase, .index = i,
                                       .timed = timed };
        if (pthread_create(&tid[i], NULL, pgb_ct_main, &t[i]) != 0)
            pgb_die("pthread_create failed");
    }
    pthread_barrier_wait(&go);
    pgb_sleep_ns((int64_t)PGB_WARM_MS * 1000000);
    int64_t t0 = pgb_now_ns();
    atomic_store(&phase, PGB_COUNT);
    pgb_sleep_ns((int64_t)ms * 1000000);
    atomic_store(&phase, PGB_STOP);
    int64_t t1 = pgb_now_ns();

    long total = 0, least = -1, most = 0;
    size_t nw = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        if (t[i].failed)
            pgb_die("a thread failed in the contended loop");
        total += t[i].count;
        if (least < 0 || t[i].count < least)
            least = t[i].count;
        if (t[i].count > most)
            most = t[i].count;
        nw += t[i].nwaits;
    }
    pthread_barrier_destroy(&go);
    printf("qps=%.1f fair=%.3f queries=%ld min_thread=%ld max_thread=%ld",
           (double)total * 1e9 / (double)(t1 - t0),
           most ? (double)least / (double)most : 0.0, total, least, most);
    if (timed && nw > 0) {
        int64_t *all = malloc(nw * sizeof *all);
        if (!all)
            pgb_die("out of memory");
        size_t k = 0;
        for (int i = 0; i < threads; i++) {
            memcpy(all + k, t[i].waits, t[i].nwaits * sizeof *all);
            k += t[i].nwaits;
        }
        qsort(all, nw, sizeof *all, pgb_cmp_i64);
        /* Nearest rank, as the threadpool peers' percentiles. */
        size_t i50 = (nw * 50 + 99) / 100, i99 = (nw * 99 + 99) / 100;
        printf(" wait_p50_ns=%lld wait_p99_ns=%lld wait_max_ns=%lld",
               (long long)all[i50 ? i50 - 1 : 0],
               (long long)all[i99 ? i99 - 1 : 0], (long long)all[nw - 1]);
        free(all);
    }
    for (int i = 0; i < threads; i++)
        free(t[i].waits);
}

#endif /* PEER_PG_COMMON_H */
