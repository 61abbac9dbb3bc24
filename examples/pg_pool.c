/* examples/pg_pool.c - threads sharing one pool of PostgreSQL connections.
 *
 *   pg_pool [THREADS [QUERIES]]        default: 8 threads, 1000 queries each
 *
 * Each thread runs its QUERIES statements `SELECT $1::int * 2` through
 * pk_pg_exec, with a parameter of its own, and checks every answer. The
 * threads share one pk_pg_pool of at most 4 connections, so more threads
 * than connections wait their turn: pk_pg_exec borrows a connection,
 * runs the statement and gives the connection back, all within one
 * deadline. At the end it prints what each thread got and the pool's own
 * counters (pk_pg_pool_core, pk_pool_stats_get): how many connections it
 * made for all those queries, and how long threads waited for one.
 *
 * The server: PK_PG_CONNINFO (any libpq conninfo or URI) when it is set;
 * else a throwaway cluster started through tests/support/pg_server.sh
 * (run from poolkit's source tree) and removed at the end, Ctrl-C
 * included (examples/support/throwaway_pg.c). Without either it says how
 * to run it and exits with status 2. */
#include <libpq-fe.h>
#include <poolkit/pg.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support/throwaway_pg.h"

#define POOL_SIZE 4
#define QUERY_MS 5000 /* borrow + query + give back, per statement */
#define MAX_THREADS 64

struct worker {
    pthread_t thread;
    pk_pg_pool *pool;
    int id;
    int queries;
    int ok;                          /* right answers */
    int failed;                      /* errors and wrong answers */
    char first_error[PK_ERROR_MSG_SIZE + 64];
};

/* One statement: its answer must be twice the parameter. Returns 0, or
 * -1 with why in w->first_error (the first one only). */
static int
one_query(struct worker *w, long value)
{
    char param[32], want[32], why[sizeof w->first_error];
    const char *const params[] = { param };
    PGresult *res;
    pk_error err;
    int rc;

    err.msg[0] = '\0';
    snprintf(param, sizeof param, "%ld", value);
    snprintf(want, sizeof want, "%ld", 2 * value);
    rc = pk_pg_exec(w->pool, "SELECT $1::int * 2", 1, params, QUERY_MS,
                    &res, &err);
    if (rc) {
        /* PK_EADAPTER: the query failed (err.sys holds its SQLSTATE);
         * PK_ETIMEDOUT: no connection or no answer within QUERY_MS. */
        snprintf(why, sizeof why, "%s: %s", pk_err_name(rc), err.msg);
    } else {
        int right = PQntuples(res) == 1 &&
                    strcmp(PQgetvalue(res, 0, 0), want) == 0;
        snprintf(why, sizeof why, "SELECT %s * 2 answered %s", param,
                 PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "no row");
        PQclear(res); /* the result is ours */
        if (right)
            return 0;
    }
    if (!w->first_error[0])
        snprintf(w->first_error, sizeof w->first_error, "%s", why);
    return -1;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;

    for (int i = 0; i < w->queries; i++) {
        if (one_query(w, (long)w->id * 1000000 + i) == 0)
            w->ok++;
        else
            w->failed++;
    }
    return NULL;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads argv[i] as a count in 1..max; returns it, or -1. */
static int
count_arg(int argc, char **argv, int i, int dflt, int max)
{
    char *end;
    long v;

    if (i >= argc)
        return dflt;
    v = strtol(argv[i], &end, 10);
    return *end || v < 1 || v > max ? -1 : (int)v;
}

/* Runs the threads on pool; returns how many queries failed (or -1 when
 * no thread could start). */
static long
run_threads(pk_pg_pool *pool, int nthreads, int queries)
{
    static struct worker w[MAX_THREADS];
    long ok = 0, failed = 0;
    int started = 0;
    double t0 = now_s(), secs;

    for (; started < nthreads; started++) {
        w[started] = (struct worker){ .pool = pool, .id = started,
                                      .queries = queries };
        if (pthread_create(&w[started].thread, NULL, worker_main,
                           &w[started]) != 0) {
            fprintf(stderr, "pg_pool: pthread_create failed after %d "
                    "threads\n", started);
            break;
        }
    }
    for (int i = 0; i < started; i++)
        pthread_join(w[i].thread, NULL);
    secs = now_s() - t0;
    printf("right answers per thread:");
    for (int i = 0; i < started; i++) {
        printf(" %d", w[i].ok);
        ok += w[i].ok;
        failed += w[i].failed;
    }
    printf("\n");
    for (int i = 0; i < started; i++)
        if (w[i].failed)
            printf("thread %d: %d failed, the first: %s\n", i, w[i].failed,
                   w[i].first_error);
    printf("%ld queries in %.2f s: %.0f a second, %.0f \xc2\xb5s each for a "
           "thread (borrow, query, give back); %ld failed\n",
           ok + failed, secs, (double)(ok + failed) / secs,
           secs * 1e6 * started / (double)(ok + failed), failed);
    return started ? failed : -1;
}

static void
print_stats(pk_pg_pool *pool)
{
    pk_pool_stats st;
    int rc = pk_pool_stats_get(pk_pg_pool_core(pool), &st);

    if (rc) {
        fprintf(stderr, "pg_pool: pk_pool_stats_get: %s\n", pk_strerror(rc));
        return;
    }
    printf("pool: %llu connection%s made (max_size %zu) for %llu acquires; "
           "%llu timeouts, %llu failed connects; waits p50 %.1f us, p99 "
           "%.1f us, max %.1f us\n",
           (unsigned long long)st.created, st.created == 1 ? "" : "s",
           st.max_size,
           (unsigned long long)st.acquires,
           (unsigned long long)st.timeouts,
           (unsigned long long)st.create_failures, st.wait_p50_ns / 1e3,
           st.wait_p99_ns / 1e3, st.wait_max_ns / 1e3);
}

int
main(int argc, char **argv)
{
    int nthreads = count_arg(argc, argv, 1, 8, MAX_THREADS);
    int queries = count_arg(argc, argv, 2, 1000, 1000000);
    struct throwaway_pg pg;
    char ci[1024];
    pk_pg_pool *pool;
    pk_error err;
    int started, rc;
    long failed;

    if (nthreads < 0 || queries < 0 || argc > 3) {
        fprintf(stderr, "usage: pg_pool [THREADS (1-%d) [QUERIES]]\n",
                MAX_THREADS);
        return 2;
    }
    rc = throwaway_pg_conninfo("pg_pool", ci, sizeof ci, &pg, &started);
    if (rc)
        return rc;
    rc = pk_pg_pool_create(&pool, &(pk_pg_options){
                               .conninfo = ci, .max_size = POOL_SIZE,
                               .connect_timeout_ms = 5000 }, &err);
    if (rc) {
        fprintf(stderr, "pg_pool: pk_pg_pool_create: %s: %s\n",
                pk_strerror(rc), err.msg);
        if (started)
            throwaway_pg_stop(&pg);
        return 1;
    }
    printf("%d threads x %d queries (SELECT $1::int * 2) through one pool "
           "of at most %d connections\n", nthreads, queries, POOL_SIZE);
    failed = run_threads(pool, nthreads, queries);
    print_stats(pool);
    pk_pg_pool_destroy(pool);
    if (started)
        throwaway_pg_stop(&pg);
    return failed == 0 ? 0 : 1;
}
