/* examples/pg_transaction.c - money transfers that retry on conflict.
 *
 *   pg_transaction [THREADS [TRANSFERS]]   default: 8 threads, 200 each
 *
 * A table of 10 accounts holding 1000 each. Every thread moves random
 * amounts between two random accounts, each move one SERIALIZABLE
 * transaction run by pk_pg_transaction: read both balances, refuse an
 * overdraft, write both. Concurrent moves over the same accounts make
 * PostgreSQL abort one of them with a serialization failure (SQLSTATE
 * 40001) or a deadlock (40P01); pk_pg_transaction rolls it back, waits a
 * moment and runs the whole function again. At the end the money is all
 * there (the sum is 10000) and the program prints how many moves needed
 * more than one attempt.
 *
 * The server: PK_PG_CONNINFO, or a throwaway cluster (as pg_pool). */
#include <libpq-fe.h>
#include <poolkit/pg.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/throwaway_pg.h"

#define ACCOUNTS 10
#define MAX_THREADS 64
#define STATEMENT_MS 5000
#define TRANSFER_MS 30000 /* all attempts of one transfer */
#define ATTEMPTS 20

struct move {
    int from, to, amount;
    int attempts; /* pk_pg_transaction may call the function again */
};

static atomic_long retried, refused, failed;

/* One statement with one or two integer parameters ($2 only when sql
 * names it) on the transaction's connection; *value gets the first column
 * of the first row when value is not NULL. */
static int
run(pk_pg_lease *l, const char *sql, int a, int b, long *value,
    pk_error *err)
{
    int nparams = strstr(sql, "$2") ? 2 : 1;
    char pa[16], pb[16];
    const char *const params[] = { pa, pb };
    PGresult *r = NULL;

    snprintf(pa, sizeof pa, "%d", a);
    snprintf(pb, sizeof pb, "%d", b);
    int rc = pk_pg_query(l, sql, nparams, params, STATEMENT_MS, &r, err);
    if (rc == 0 && value)
        *value = PQntuples(r) == 1 ? atol(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return rc;
}

/* The transaction's body: it must leave side effects to the database,
 * since a conflict runs it again from the start. */
static int
transfer(pk_pg_lease *l, void *arg, pk_error *err)
{
    struct move *m = arg;
    long balance;

    m->attempts++;
    int rc = run(l, "SELECT balance FROM pk_accounts WHERE id = $1", m->from,
                 0, &balance, err);
    if (rc)
        return rc;
    if (balance < m->amount)
        return pk_error_set(err, PK_ECANCELED, 0, "account %d has %ld, "
                            "not %d", m->from, balance, m->amount);
    rc = run(l, "UPDATE pk_accounts SET balance = balance - $2 WHERE id = $1",
             m->from, m->amount, NULL, err);
    if (rc == 0)
        rc = run(l, "UPDATE pk_accounts SET balance = balance + $2 WHERE "
                 "id = $1", m->to, m->amount, NULL, err);
    return rc;
}

struct worker {
    pthread_t thread;
    pk_pg_pool *pool;
    unsigned seed;
    int transfers;
};

static void *
worker_main(void *arg)
{
    struct worker *w = arg;

    for (int i = 0; i < w->transfers; i++) {
        struct move m = { .from = rand_r(&w->seed) % ACCOUNTS,
                          .amount = 1 + rand_r(&w->seed) % 100 };
        m.to = (m.from + 1 + rand_r(&w->seed) % (ACCOUNTS - 1)) % ACCOUNTS;
        pk_error err;
        int rc = pk_pg_transaction(w->pool, "BEGIN ISOLATION LEVEL "
                                   "SERIALIZABLE", ATTEMPTS, TRANSFER_MS,
                                   transfer, &m, &err);
        if (m.attempts > 1)
            atomic_fetch_add(&retried, 1);
        if (rc == PK_ECANCELED) {
            atomic_fetch_add(&refused, 1);
        } else if (rc) {
            if (atomic_fetch_add(&failed, 1) == 0)
                fprintf(stderr, "pg_transaction: a transfer failed after %d "
                        "attempts: %s: %s\n", m.attempts, pk_err_name(rc),
                        err.msg);
        }
    }
    return NULL;
}

static int
setup_table(pk_pg_pool *pool)
{
    static const char *const steps[] = {
        "DROP TABLE IF EXISTS pk_accounts",
        "CREATE TABLE pk_accounts (id int PRIMARY KEY, balance bigint)",
        "INSERT INTO pk_accounts SELECT g, 1000 FROM generate_series(0, 9) g",
    };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        PGresult *r = NULL;
        pk_error err;
        int rc = pk_pg_exec(pool, steps[i], 0, NULL, STATEMENT_MS, &r, &err);
        PQclear(r);
        if (rc) {
            fprintf(stderr, "pg_transaction: %s: %s\n", steps[i], err.msg);
            return -1;
        }
    }
    return 0;
}

/* The sum of all balances, or -1. */
static long
total(pk_pg_pool *pool)
{
    PGresult *r = NULL;
    pk_error err;
    long sum = -1;
    if (pk_pg_exec(pool, "SELECT sum(balance) FROM pk_accounts", 0, NULL,
                   STATEMENT_MS, &r, &err) == 0)
        sum = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return sum;
}

static int
count_arg(int argc, char **argv, int i, int dflt, int max)
{
    char *end;
    if (i >= argc)
        return dflt;
    long v = strtol(argv[i], &end, 10);
    return *end || v < 1 || v > max ? -1 : (int)v;
}

int
main(int argc, char **argv)
{
    int nthreads = count_arg(argc, argv, 1, 8, MAX_THREADS);
    int transfers = count_arg(argc, argv, 2, 200, 100000);
    static struct worker w[MAX_THREADS];
    struct throwaway_pg pg;
    char ci[1024];
    pk_pg_pool *pool = NULL;
    pk_error err;
    int started;

    if (nthreads < 0 || transfers < 0 || argc > 3) {
        fprintf(stderr, "usage: pg_transaction [THREADS (1-%d) "
                "[TRANSFERS]]\n", MAX_THREADS);
        return 2;
    }
    int rc = throwaway_pg_conninfo("pg_transaction", ci, sizeof ci, &pg,
                                   &started);
    if (rc)
        return rc;
    rc = pk_pg_pool_create(&pool, &(pk_pg_options){ .conninfo = ci,
                                                     .max_size = 4 },
                           &err);
    if (rc || setup_table(pool) != 0) {
        if (rc)
            fprintf(stderr, "pg_transaction: %s\n", err.msg);
        pk_pg_pool_destroy(pool);
        if (started)
            throwaway_pg_stop(&pg);
        return 1;
    }
    int n = 0;
    for (; n < nthreads; n++) {
        w[n] = (struct worker){ .pool = pool, .seed = 7u + (unsigned)n,
                                .transfers = transfers };
        if (pthread_create(&w[n].thread, NULL, worker_main, &w[n]) != 0)
            break;
    }
    for (int i = 0; i < n; i++)
        pthread_join(w[i].thread, NULL);
    long sum = total(pool);
    printf("%d threads x %d transfers: %ld needed more than one attempt "
           "(serialization failures and deadlocks, retried), %ld refused "
           "for lack of funds, %ld failed\n",
           n, transfers, atomic_load(&retried), atomic_load(&refused),
           atomic_load(&failed));
    printf("total money: %ld (must be %d)\n", sum, ACCOUNTS * 1000);
    pk_pg_pool_destroy(pool);
    if (started)
        throwaway_pg_stop(&pg);
    return sum == ACCOUNTS * 1000 && atomic_load(&failed) == 0 ? 0 : 1;
}
