/* tests/integration/test_pg_query.c - the PostgreSQL pool's statements
 * against a real server (pg_fixture.h): pk_pg_exec, pk_pg_query, the
 * statement cache, pk_pg_transaction, SQLSTATEs and the BROKEN decision. */
#include "pg_fixture.h"

#include <pthread.h>
#include <stdatomic.h>

#define LONG_MS 20000 /* acquire timeouts only a broken pool reaches */

static int
packed(const char *st)
{
    int v = 0;
    for (int i = 0; i < 5; i++)
        v |= ((st[i] - '0') & 0x3F) << (6 * i);
    return v;
}

static void
test_sqlstate_of_failed_query_in_error(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    PGresult *r = (PGresult *)0x1;
    pk_error err;
    char st[6];

    assert_int_equal(pk_pg_exec(pool, "SELECT 1/0", 0, NULL, LONG_MS, &r,
                                &err),
                     PK_EADAPTER);
    assert_null(r);
    assert_int_equal(err.code, PK_EADAPTER);
    assert_int_equal(err.sys, packed("22012"));
    assert_int_equal(pk_pg_sqlstate(err.sys, st), 0);
    assert_string_equal(st, "22012");
    assert_string_equal(err.msg, "division by zero");

    assert_int_equal(pk_pg_exec(pool, "SELEC 1", 0, NULL, LONG_MS, &r, &err),
                     PK_EADAPTER);
    assert_int_equal(err.sys, packed("42601"));
    assert_int_equal(pk_pg_sqlstate(err.sys, st), 0);
    assert_string_equal(st, "42601");
    if (!strstr(err.msg, "syntax error"))
        fail_msg("unexpected message: %s", err.msg);
    assert_null(strchr(err.msg, '\n'));

    /* The helper round-trips every code of letters and digits. */
    const char *codes[] = { "00000", "08006", "57P01", "40P01", "XX000",
                            "ZZZZZ", "2BP01" };
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        assert_int_equal(pk_pg_sqlstate(packed(codes[i]), st), 0);
        assert_string_equal(st, codes[i]);
    }
    assert_int_equal(pk_pg_sqlstate(packed("22012"), NULL), PK_EINVAL);
    assert_int_equal(pk_pg_sqlstate(-1, st), PK_EINVAL);
    assert_int_equal(pk_pg_sqlstate(1 << 30, st), PK_EINVAL);
    assert_string_equal(st, "2BP01"); /* left alone on failure */

    /* A query error does not cost the connection. */
    pk_pool_stats ps;
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &ps), 0);
    assert_int_equal(ps.created, 1);
    assert_int_equal(ps.destroyed, 0);
    pk_pg_pool_destroy(pool);
}

static void
test_exec_with_parameters(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    PGresult *r = NULL;
    pk_error err;

    const char *const p1[] = { "41" };
    assert_int_equal(pk_pg_exec(pool, "SELECT $1::int + 1", 1, p1, LONG_MS,
                                &r, &err),
                     0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    /* Text, NULL, no parameters, a command, PK_WAIT_FOREVER. */
    const char *const p2[] = { "a'b", NULL };
    assert_int_equal(pk_pg_exec(pool, "SELECT $1::text || 'c', $2::int IS "
                                      "NULL",
                                2, p2, PK_WAIT_FOREVER, &r, &err),
                     0);
    assert_string_equal(PQgetvalue(r, 0, 0), "a'bc");
    assert_string_equal(PQgetvalue(r, 0, 1), "t");
    PQclear(r);
    assert_int_equal(pk_pg_exec(pool, "SET application_name = 'x'", 0, NULL,
                                LONG_MS, &r, &err),
                     0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    /* Bad input. */
    assert_int_equal(pk_pg_exec(NULL, "SELECT 1", 0, NULL, 10, &r, &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_exec(pool, NULL, 0, NULL, 10, &r, &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_exec(pool, "SELECT 1", 0, NULL, 10, NULL, &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_exec(pool, "SELECT $1", 1, NULL, 10, &r, &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_exec(pool, "SELECT 1", -1, NULL, 10, &r, &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_exec(pool, "SELECT 1", 0, NULL, 0, &r, &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_exec(pool, "SELECT 1", 0, NULL, -7, &r, &err),
                     PK_EINVAL);
    /* The pool is exhausted: the acquire times out within the call's
     * timeout. */
    pk_pg_lease l;
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_int_equal(pk_pg_exec(pool, "SELECT 1", 0, NULL, 100, &r, &err),
                     PK_ETIMEDOUT);
    assert_null(r);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_pool_destroy(pool);
}

static void
test_exec_timeout_cancels_query_and_connection_comes_back_idle(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    PGresult *r = NULL;
    pk_error err;
    struct timespec t0;
    char v[32], ci[256];

    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = pk_pg_exec(pool, "SELECT pg_sleep(5)", 0, NULL, 200, &r, &err);
    uint64_t took = elapsed_ms(&t0);
    assert_int_equal(rc, PK_ETIMEDOUT);
    assert_null(r);
    if (!strstr(err.msg, "cancelled"))
        fail_msg("unexpected message: %s", err.msg);
    assert_true(took >= 190);
    assert_true(took < 1000);

    /* The server runs no pg_sleep any more. */
    PGconn *admin = PQconnectdb(tcp_conninfo(ci, sizeof ci, NULL));
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    assert_string_equal(query1(admin, "SELECT count(*) FROM pg_stat_activity "
                                      "WHERE state = 'active' AND query "
                                      "LIKE 'SELECT pg_sleep(5)%' AND pid <> "
                                      "pg_backend_pid()",
                               v, sizeof v),
                        "0");
    PQfinish(admin);

    /* The next borrower gets an idle, working connection. */
    pk_pg_lease l;
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_int_equal(PQtransactionStatus(l.conn), PQTRANS_IDLE);
    assert_int_equal(PQisBusy(l.conn), 0);
    assert_string_equal(query1(l.conn, "SELECT 7", v, sizeof v), "7");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    /* It was drained, not replaced. */
    pk_pool_stats ps;
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &ps), 0);
    assert_int_equal(ps.destroyed, 0);

    /* And pk_pg_exec on it works. */
    assert_int_equal(pk_pg_exec(pool, "SELECT 1", 0, NULL, LONG_MS, &r, &err),
                     0);
    assert_string_equal(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    pk_pg_pool_destroy(pool);
}

static void
test_connection_class_error_releases_broken(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    PGresult *r = NULL;
    pk_error err;
    pk_pool_stats ps;
    char st[6];

    assert_int_equal(pk_pg_exec(pool, "SELECT pg_backend_pid()", 0, NULL,
                                LONG_MS, &r, &err),
                     0);
    int pid = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    assert_int_equal(pk_pg_exec(pool, "SELECT pg_terminate_backend("
                                      "pg_backend_pid())",
                                0, NULL, LONG_MS, &r, &err),
                     PK_EADAPTER);
    assert_null(r);
    assert_int_equal(pk_pg_sqlstate(err.sys, st), 0);
    assert_string_equal(st, "57P01"); /* admin_shutdown */
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &ps), 0);
    assert_int_equal(ps.destroyed, 1);
    /* The SQLSTATE alone decides, through pk_pg_exec too: a
     * connection-class code raised on a healthy connection. */
    assert_int_equal(pk_pg_exec(pool, "DO $$ BEGIN RAISE EXCEPTION 'gone' "
                                      "USING ERRCODE = '08003'; END $$",
                                0, NULL, LONG_MS, &r, &err),
                     PK_EADAPTER);
    assert_int_equal(pk_pg_sqlstate(err.sys, st), 0);
    assert_string_equal(st, "08003");
    assert_string_equal(err.msg, "gone");
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &ps), 0);
    assert_int_equal(ps.destroyed, 2);
    /* The next exec works, on a new connection. */
    assert_int_equal(pk_pg_exec(pool, "SELECT pg_backend_pid()", 0, NULL,
                                LONG_MS, &r, &err),
                     0);
    assert_int_not_equal(atoi(PQgetvalue(r, 0, 0)), pid);
    PQclear(r);
    pk_pg_pool_destroy(pool);
}

static void
test_release_result_decides_from_sqlstate(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 2 });
    pk_pg_lease a, b;
    pk_error err;
    pk_pool_stats ps;
    char v[32], ci[256], sql[64];

    /* a's backend is terminated from another session; the query a's
     * caller runs next fails with 57P01. */
    assert_int_equal(pk_pg_acquire(pool, &a, LONG_MS, &err), 0);
    assert_int_equal(pk_pg_acquire(pool, &b, LONG_MS, &err), 0);
    int pid_b = PQbackendPID(b.conn);
    PGconn *admin = PQconnectdb(tcp_conninfo(ci, sizeof ci, NULL));
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)",
             PQbackendPID(a.conn));
    assert_string_equal(query1(admin, sql, v, sizeof v), "t");
    PQfinish(admin);
    PGresult *dead = NULL;
    for (int i = 0; i < 100; i++) {
        PQclear(dead);
        dead = PQexec(a.conn, "SELECT 1");
        if (PQresultStatus(dead) == PGRES_FATAL_ERROR)
            break;
        sleep_ms(10);
    }
    assert_int_equal(PQresultStatus(dead), PGRES_FATAL_ERROR);
    assert_int_equal(pk_pg_release_result(pool, &a, dead), 0);
    assert_null(a.conn);
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &ps), 0);
    assert_int_equal(ps.destroyed, 1);

    PQclear(dead);
    assert_int_equal(pk_pg_release(pool, &b, PK_RELEASE_OK), 0);

    /* On a healthy connection the SQLSTATE alone decides: a result that
     * failed with each connection-class code (raised by the server on
     * purpose) releases it BROKEN. */
    const char *codes[] = { "08006", "08P01", "57P01", "57P02", "57P03" };
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        assert_int_equal(pk_pg_acquire(pool, &b, LONG_MS, &err), 0);
        snprintf(sql, sizeof sql, "DO $$ BEGIN RAISE EXCEPTION 'x' USING "
                 "ERRCODE = '%s'; END $$", codes[i]);
        PGresult *r = PQexec(b.conn, sql);
        assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE),
                            codes[i]);
        assert_int_equal(PQstatus(b.conn), CONNECTION_OK);
        assert_int_equal(pk_pg_release_result(pool, &b, r), 0);
        PQclear(r);
        assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &ps), 0);
        assert_int_equal(ps.destroyed, 2 + i);
    }

    /* A failed query of another class keeps the connection. */
    assert_int_equal(pk_pg_acquire(pool, &b, LONG_MS, &err), 0);
    assert_int_not_equal(PQbackendPID(b.conn), pid_b);
    int pid = PQbackendPID(b.conn);
    PGresult *r = PQexec(b.conn, "SELECT 1/0");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "22012");
    assert_int_equal(pk_pg_release_result(pool, &b, r), 0);
    PQclear(r);
    assert_int_equal(pk_pg_acquire(pool, &b, LONG_MS, &err), 0);
    assert_int_equal(PQbackendPID(b.conn), pid);
    assert_int_equal(pk_pg_release_result(pool, &b, NULL), 0);
    assert_int_equal(pk_pg_release_result(pool, &b, NULL), PK_EINVAL);
    assert_int_equal(pk_pg_release_result(NULL, &b, NULL), PK_EINVAL);
    pk_pg_pool_destroy(pool);
}

/* ---- pk_pg_query and the statement cache ------------------------------------ */

static PGresult *
exec_result(pk_pg_pool *pool, const char *sql)
{
    PGresult *r = NULL;
    pk_error err;
    int rc = pk_pg_exec(pool, sql, 0, NULL, LONG_MS, &r, &err);
    if (rc)
        fail_msg("%s: %s: %s", sql, pk_err_name(rc), err.msg);
    return r;
}

static void
test_query_on_a_lease_prepares_on_second_use(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    pk_pg_lease l;
    pk_error err;
    PGresult *r = NULL;
    const char *const p[] = { "5" };
    char v[16];

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pk_pg_query(&l, "SELECT $1::int * 2", 1, p, LONG_MS,
                                     &r, &err),
                         0);
        assert_string_equal(PQgetvalue(r, 0, 0), "10");
        PQclear(r);
        /* Blocking again after each call, for the caller's own libpq. */
        assert_int_equal(PQisnonblocking(l.conn), 0);
    }
    assert_string_equal(query1(l.conn, "SELECT count(*) FROM "
                               "pg_prepared_statements WHERE name LIKE "
                               "'pk\\_s%'", v, sizeof v), "1");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_stats s;
    assert_int_equal(pk_pg_stats_get(pool, &s), 0);
    assert_int_equal(s.statements_prepared, 1);

    /* The full reset keeps it: the next borrower runs it by name. */
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_int_equal(pk_pg_query(&l, "SELECT $1::int * 2", 1, p, LONG_MS, &r,
                                 &err),
                     0);
    PQclear(r);
    assert_int_equal(pk_pg_stats_get(pool, &s), 0);
    assert_int_equal(s.statements_prepared, 1);

    /* Bad input, and a connection the caller left busy. */
    assert_int_equal(pk_pg_query(NULL, "SELECT 1", 0, NULL, 10, &r, &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_query(&l, NULL, 0, NULL, 10, &r, &err), PK_EINVAL);
    assert_int_equal(pk_pg_query(&l, "SELECT 1", 0, NULL, 0, &r, &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_query(&l, "SELECT 1", 1, NULL, 10, &r, &err),
                     PK_EINVAL);
    assert_int_equal(PQsendQuery(l.conn, "SELECT 1"), 1);
    assert_int_equal(pk_pg_query(&l, "SELECT 1", 0, NULL, 10, &r, &err),
                     PK_EINVAL);
    assert_null(r);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pg_query(&l, "SELECT 1", 0, NULL, 10, &r, &err),
                     PK_EINVAL); /* released */
    pk_pg_pool_destroy(pool);

    /* Off: nothing is prepared. */
    pool = make_pool(&(pk_pg_options){ .max_size = 1,
                                       .statement_cache = -1 });
    for (int i = 0; i < 3; i++)
        PQclear(exec_result(pool, "SELECT 1"));
    assert_int_equal(pk_pg_stats_get(pool, &s), 0);
    assert_int_equal(s.statements_prepared, 0);
    pk_pg_pool_destroy(pool);
}

/* A cache of two: the least recently used is deallocated for the third. */
static void
test_statement_cache_evicts_least_recently_used(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1,
                                                   .statement_cache = 2 });
    const char *sql[] = { "SELECT 1", "SELECT 2", "SELECT 3" };
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 2; i++)
            PQclear(exec_result(pool, sql[k]));
    pk_pg_lease l;
    pk_error err;
    char v[64];
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_string_equal(query1(l.conn, "SELECT count(*) FROM "
                               "pg_prepared_statements", v, sizeof v), "2");
    assert_string_equal(query1(l.conn, "SELECT string_agg(statement, ',' "
                               "ORDER BY statement) FROM "
                               "pg_prepared_statements", v, sizeof v),
                        "SELECT 2,SELECT 3");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_pool_destroy(pool);
}

static int
select_inv(pk_pg_lease *l, void *arg, pk_error *err)
{
    PGresult *r = NULL;
    ++*(int *)arg;
    int rc = pk_pg_query(l, "SELECT * FROM pk_inv", 0, NULL, LONG_MS, &r,
                         err);
    if (rc == 0 && PQnfields(r) != 3)
        rc = pk_error_set(err, PK_EADAPTER, 0, "%d columns", PQnfields(r));
    PQclear(r);
    return rc;
}

/* After ALTER TABLE a prepared SELECT * fails with "cached plan must not
 * change result type" (0A000); the helper prepares it again and runs it
 * again, so the caller never sees it (the error that bricks every pooled
 * connection after a migration in sqlx). */
static void
test_statement_invalidated_by_alter_table_is_prepared_again(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    PQclear(exec_result(pool, "CREATE TABLE pk_inv (a int)"));
    PQclear(exec_result(pool, "INSERT INTO pk_inv VALUES (1)"));
    for (int i = 0; i < 3; i++) {
        PGresult *r = exec_result(pool, "SELECT * FROM pk_inv");
        assert_int_equal(PQnfields(r), 1);
        PQclear(r);
    }
    PQclear(exec_result(pool, "ALTER TABLE pk_inv ADD COLUMN b int"));
    PGresult *r = exec_result(pool, "SELECT * FROM pk_inv");
    assert_int_equal(PQnfields(r), 2);
    assert_int_equal(PQntuples(r), 1);
    PQclear(r);
    r = exec_result(pool, "SELECT * FROM pk_inv");
    assert_int_equal(PQnfields(r), 2);
    PQclear(r);

    /* Inside a transaction the error cannot be hidden (the transaction
     * is aborted); pk_pg_transaction runs it again, and the statement is
     * deallocated when the connection is released. */
    PQclear(exec_result(pool, "ALTER TABLE pk_inv ADD COLUMN c int"));
    int attempts = 0;
    pk_error err;
    assert_int_equal(pk_pg_transaction(pool, NULL, 0, LONG_MS, select_inv,
                                       &attempts, &err),
                     0);
    assert_int_equal(attempts, 2);
    pk_pg_stats st;
    assert_int_equal(pk_pg_stats_get(pool, &st), 0);
    assert_int_equal(st.resets_failed, 0);
    r = exec_result(pool, "SELECT * FROM pk_inv");
    assert_int_equal(PQnfields(r), 3);
    PQclear(r);
    PQclear(exec_result(pool, "DROP TABLE pk_inv"));
    pk_pg_pool_destroy(pool);
}

/* ---- pk_pg_transaction ------------------------------------------------------- */

struct transfer {
    char conninfo[256];
    int attempts;
    int interfere; /* on the first attempt, commit a conflicting update */
    int fail_with; /* return this after the update (0: none) */
    int swallow;   /* run a failing statement and return 0 anyway */
};

static int
transfer(pk_pg_lease *l, void *arg, pk_error *err)
{
    struct transfer *t = arg;
    PGresult *r = NULL;
    t->attempts++;
    int rc = pk_pg_query(l, "SELECT v FROM pk_acct WHERE id = 1", 0, NULL,
                         LONG_MS, &r, err);
    PQclear(r);
    if (rc)
        return rc;
    if (t->interfere && t->attempts == 1) {
        PGconn *other = PQconnectdb(t->conninfo);
        exec_ok(other, "UPDATE pk_acct SET v = v + 1 WHERE id = 1");
        PQfinish(other);
    }
    rc = pk_pg_query(l, "UPDATE pk_acct SET v = v + 10 WHERE id = 1", 0,
                     NULL, LONG_MS, &r, err);
    PQclear(r);
    if (rc)
        return rc;
    if (t->swallow) {
        pk_error ignored;
        pk_pg_query(l, "SELECT 1/0", 0, NULL, LONG_MS, &r, &ignored);
        return 0;
    }
    if (t->fail_with)
        return pk_error_set(err, t->fail_with, 0, "the function said no");
    return 0;
}

static const char *
account(pk_pg_pool *pool, char *v, size_t size)
{
    PGresult *r = exec_result(pool, "SELECT v FROM pk_acct WHERE id = 1");
    snprintf(v, size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void
test_transaction_retries_a_serialization_failure(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 2 });
    struct transfer t = { .interfere = 1 };
    tcp_conninfo(t.conninfo, sizeof t.conninfo, NULL);
    pk_error err;
    char v[16];

    PQclear(exec_result(pool, "DROP TABLE IF EXISTS pk_acct"));
    PQclear(exec_result(pool, "CREATE TABLE pk_acct (id int PRIMARY KEY, "
                        "v int)"));
    PQclear(exec_result(pool, "INSERT INTO pk_acct VALUES (1, 0)"));
    assert_int_equal(pk_pg_transaction(pool, "BEGIN ISOLATION LEVEL "
                                       "REPEATABLE READ", 0, LONG_MS,
                                       transfer, &t, &err),
                     0);
    assert_int_equal(t.attempts, 2);
    assert_string_equal(account(pool, v, sizeof v), "11");

    /* One attempt allowed: the serialization failure comes back. */
    t.attempts = 0;
    assert_int_equal(pk_pg_transaction(pool, "BEGIN ISOLATION LEVEL "
                                       "REPEATABLE READ", 1, LONG_MS,
                                       transfer, &t, &err),
                     PK_EADAPTER);
    char st[6];
    assert_int_equal(pk_pg_sqlstate(err.sys, st), 0);
    assert_string_equal(st, "40001");
    assert_int_equal(t.attempts, 1);
    assert_string_equal(account(pool, v, sizeof v), "12");
    pk_pg_pool_destroy(pool);
}

static void
test_transaction_commits_or_rolls_back(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    struct transfer t = { 0 };
    pk_error err;
    char v[16];

    PQclear(exec_result(pool, "DROP TABLE IF EXISTS pk_acct"));
    PQclear(exec_result(pool, "CREATE TABLE pk_acct (id int PRIMARY KEY, "
                        "v int)"));
    PQclear(exec_result(pool, "INSERT INTO pk_acct VALUES (1, 0)"));
    assert_int_equal(pk_pg_transaction(pool, NULL, 0, LONG_MS, transfer, &t,
                                       &err),
                     0);
    assert_string_equal(account(pool, v, sizeof v), "10");

    t = (struct transfer){ .fail_with = PK_ECANCELED };
    assert_int_equal(pk_pg_transaction(pool, NULL, 0, LONG_MS, transfer, &t,
                                       &err),
                     PK_ECANCELED);
    assert_int_equal(t.attempts, 1);
    assert_non_null(strstr(err.msg, "the function said no"));
    assert_string_equal(account(pool, v, sizeof v), "10");

    /* An error the function swallowed: COMMIT would roll back silently;
     * the helper says so instead. */
    t = (struct transfer){ .swallow = 1 };
    assert_int_equal(pk_pg_transaction(pool, NULL, 0, LONG_MS, transfer, &t,
                                       &err),
                     PK_EADAPTER);
    assert_non_null(strstr(err.msg, "had failed"));
    assert_string_equal(account(pool, v, sizeof v), "10");

    /* Bad input. */
    assert_int_equal(pk_pg_transaction(NULL, NULL, 0, LONG_MS, transfer, &t,
                                       &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_transaction(pool, NULL, 0, LONG_MS, NULL, &t,
                                       &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_transaction(pool, NULL, -1, LONG_MS, transfer, &t,
                                       &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_transaction(pool, NULL, 0, 0, transfer, &t, &err),
                     PK_EINVAL);
    PQclear(exec_result(pool, "DROP TABLE pk_acct"));
    pk_pg_pool_destroy(pool);
}

/* require_writable: a read-only session's 25006 closes the connection
 * (a standby, or a primary that became one); without it, it stays. */
static void
test_read_only_error_breaks_only_with_require_writable(void **state)
{
    (void)state;
    char ci[256];
    for (int want = 0; want < 2; want++) {
        pk_pg_pool *pool = make_pool(&(pk_pg_options){
            .conninfo = tcp_conninfo(ci, sizeof ci, "user=postgres "
                                     "options='-c "
                                     "default_transaction_read_only=on'"),
            .max_size = 1, .require_writable = want });
        PGresult *r = NULL;
        pk_error err;
        assert_int_equal(pk_pg_exec(pool, "INSERT INTO pk_tx VALUES (1)", 0,
                                    NULL, LONG_MS, &r, &err),
                         PK_EADAPTER);
        char st[6];
        assert_int_equal(pk_pg_sqlstate(err.sys, st), 0);
        assert_string_equal(st, "25006");
        pk_pool_stats ps;
        assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &ps), 0);
        assert_int_equal(ps.destroyed, (uint64_t)want);
        pk_pg_pool_destroy(pool);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sqlstate_of_failed_query_in_error),
        cmocka_unit_test(test_exec_with_parameters),
        cmocka_unit_test(test_exec_timeout_cancels_query_and_connection_comes_back_idle),
        cmocka_unit_test(test_connection_class_error_releases_broken),
        cmocka_unit_test(test_release_result_decides_from_sqlstate),
        cmocka_unit_test(test_query_on_a_lease_prepares_on_second_use),
        cmocka_unit_test(test_statement_cache_evicts_least_recently_used),
        cmocka_unit_test(test_statement_invalidated_by_alter_table_is_prepared_again),
        cmocka_unit_test(test_transaction_retries_a_serialization_failure),
        cmocka_unit_test(test_transaction_commits_or_rolls_back),
        cmocka_unit_test(test_read_only_error_breaks_only_with_require_writable),
    };
    return pg_main("test_pg_query", tests, sizeof tests / sizeof tests[0]);
}
