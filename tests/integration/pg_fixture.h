/* tests/integration/pg_fixture.h - what the PostgreSQL integration
 * tests share: a throwaway cluster (tests/support/pg_server.sh) started in
 * the group setup and removed in the teardown, each test binary its own
 * (one binary may restart or stop its server while others run), and
 * small libpq helpers. No mock stands in for the server.
 *
 * Without PostgreSQL's server binaries a binary prints why and exits 0
 * (skipped), unless PK_PG_REQUIRED=1 (make check sets it, since its
 * set-up installs them): then a missing server is a failure.
 *
 * Header-only (static inline) because tests/support/ is linked into every
 * test and libpq only into these. */
#ifndef PK_TEST_PG_FIXTURE_H
#define PK_TEST_PG_FIXTURE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <poolkit/pg.h>

#include "server_script.h"
#include "test_util.h"



static char script[PATH_MAX];
static char dir[] = "/tmp/pk_pg_test.XXXXXX";
static int port;

/* ---- the server ----------------------------------------------------- */

static inline int
find_script(void)
{
    return script_find(script, "pg_server.sh", "PK_PG_SERVER");
}

/* Runs pg_server.sh CMD DIR; returns its exit status. */
static inline int
server(const char *cmd)
{
    return script_run(script, cmd, dir);
}

static inline int
group_setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    if (server("start") != 0) {
        fprintf(stderr, "test_pg: could not start the server (%s)\n", dir);
        return -1;
    }
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/port", dir);
    FILE *f = fopen(path, "r");
    if (!f || fscanf(f, "%d", &port) != 1) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    /* The table the transaction tests write to, made once. */
    char ci[128];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d dbname=postgres "
             "user=postgres", port);
    PGconn *c = PQconnectdb(ci);
    PGresult *r = PQexec(c, "CREATE TABLE pk_tx (x int)");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "test_pg: setup: %s\n", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

static inline int
group_teardown(void **state)
{
    (void)state;
    server("clean");
    return 0;
}

/* conninfo for user (trust: "postgres"; password: "pk_pw"), over TCP. */
static inline const char *
tcp_conninfo(char *buf, size_t size, const char *extra)
{
    snprintf(buf, size, "host=127.0.0.1 port=%d dbname=postgres %s", port,
             extra ? extra : "user=postgres");
    return buf;
}

static inline uint64_t
elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (uint64_t)((t1.tv_sec - t0->tv_sec) * 1000 +
                      (t1.tv_nsec - t0->tv_nsec) / 1000000);
}

/* One-row, one-column query; returns the value in buf, or NULL. */
static inline const char *
query1(PGconn *c, const char *sql, char *buf, size_t size)
{
    PGresult *r = PQexec(c, sql);
    const char *out = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        snprintf(buf, size, "%s", PQgetvalue(r, 0, 0));
        out = buf;
    }
    PQclear(r);
    return out;
}

static inline void
exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

static inline pk_pg_pool *
make_pool(pk_pg_options *o)
{
    char ci[256];
    pk_pg_pool *pool = NULL;
    pk_error err;

    if (!o->conninfo)
        o->conninfo = tcp_conninfo(ci, sizeof ci, NULL);
    int rc = pk_pg_pool_create(&pool, o, &err);
    if (rc)
        fail_msg("pk_pg_pool_create: %s: %s", pk_err_name(rc), err.msg);
    o->conninfo = NULL; /* ci is gone after return */
    return pool;
}


/* The binary's main: skips (or fails, with PK_PG_REQUIRED=1) without a
 * server, else runs the group. */
static inline int
pg_main(const char *name, const struct CMUnitTest *tests, size_t n)
{
    const char *required = getenv("PK_PG_REQUIRED");
    int must = required && strcmp(required, "1") == 0;
    char cmd[PATH_MAX + 64];

    if (find_script() != 0) {
        printf("%s: skip: tests/support/pg_server.sh not found\n", name);
        return must;
    }
    snprintf(cmd, sizeof cmd, "bash '%s' probe - >/dev/null", script);
    int st = system(cmd);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("%s: skip: PostgreSQL's server is not installed "
               "(apt-get install postgresql)%s\n", name,
               must ? "; PK_PG_REQUIRED=1, so this is a failure" : "");
        return must;
    }
    return _cmocka_run_group_tests(name, tests, n, group_setup,
                                   group_teardown);
}

#endif /* PK_TEST_PG_FIXTURE_H */
