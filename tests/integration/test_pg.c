/* tests/integration/test_pg.c - the PostgreSQL pool against a real
 * server: a throwaway cluster (tests/support/pg_server.sh) started in the
 * group setup and removed in the teardown. No mock stands in for it.
 *
 * Without PostgreSQL's server binaries the binary prints why and exits 0
 * (skipped), unless PK_PG_REQUIRED=1 (make check sets it, since its
 * set-up installs them): then a missing server is a failure. The few
 * elapsed-time assertions are loose bounds that separate "by the connect
 * timeout" from "by the acquire timeout", an order of magnitude apart. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <poolkit/pg.h>

#include "test_util.h"

#define LONG_MS 20000 /* acquire timeouts only a broken pool reaches */

static char script[PATH_MAX];
static char dir[] = "/tmp/pk_pg_test.XXXXXX";
static int port;

/* ---- the server ----------------------------------------------------- */

static int
find_script(void)
{
    const char *env = getenv("PK_PG_SERVER");
    char exe[PATH_MAX - 64];

    if (env) {
        snprintf(script, sizeof script, "%s", env);
        return access(script, R_OK);
    }
    snprintf(script, sizeof script, "tests/support/pg_server.sh");
    if (access(script, R_OK) == 0)
        return 0;
    /* The binary lives in build/MODE/tests/. */
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    snprintf(script, sizeof script, "%s/../../../tests/support/pg_server.sh",
             exe);
    return access(script, R_OK);
}

/* Runs pg_server.sh CMD DIR; returns its exit status. */
static int
server(const char *cmd)
{
    char line[PATH_MAX * 2 + 64];
    snprintf(line, sizeof line, "bash '%s' %s '%s' >/dev/null", script, cmd,
             dir);
    int st = system(line);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int
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

static int
group_teardown(void **state)
{
    (void)state;
    server("clean");
    return 0;
}

/* conninfo for user (trust: "postgres"; password: "pk_pw"), over TCP. */
static const char *
tcp_conninfo(char *buf, size_t size, const char *extra)
{
    snprintf(buf, size, "host=127.0.0.1 port=%d dbname=postgres %s", port,
             extra ? extra : "user=postgres");
    return buf;
}

static uint64_t
elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (uint64_t)((t1.tv_sec - t0->tv_sec) * 1000 +
                      (t1.tv_nsec - t0->tv_nsec) / 1000000);
}

/* One-row, one-column query; returns the value in buf, or NULL. */
static const char *
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

static void
exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

static pk_pg_pool *
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

/* ---- tests ---------------------------------------------------------- */

static void
test_acquire_select_1_release(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 2 });
    pk_pg_lease l;
    pk_error err;
    char v[32];

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_non_null(l.conn);
    assert_int_equal(PQstatus(l.conn), CONNECTION_OK);
    assert_string_equal(query1(l.conn, "SELECT 1", v, sizeof v), "1");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_null(l.conn);
    /* Again: the same connection comes back (LIFO), still working; the
     * longest and the endless timeout are valid. */
    assert_int_equal(pk_pg_acquire(pool, &l, INT_MAX, &err), 0);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pg_acquire(pool, &l, PK_WAIT_FOREVER, &err), 0);
    assert_string_equal(query1(l.conn, "SELECT 2", v, sizeof v), "2");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pool_stats st;
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &st), 0);
    assert_int_equal(st.created, 1);
    pk_pg_pool_destroy(pool);
}

static void
test_unix_socket_and_uri_conninfo_work(void **state)
{
    (void)state;
    char ci[512];
    char v[32];
    pk_pg_lease l;
    pk_error err;

    /* A URI over the unix socket in the cluster's dir. */
    snprintf(ci, sizeof ci, "postgresql:///postgres?host=%s&port=%d"
             "&user=postgres", dir, port);
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .conninfo = ci });
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_string_equal(query1(l.conn, "SELECT 3", v, sizeof v), "3");
    assert_string_equal(PQhost(l.conn), dir);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_pool_destroy(pool);
}

static void
test_min_size_connections_made_at_create(void **state)
{
    (void)state;
    char ci[256], v[32];
    pk_pool_stats st;

    pk_pg_pool *pool = make_pool(&(pk_pg_options){
        .conninfo = tcp_conninfo(ci, sizeof ci,
                                 "user=postgres application_name=pk_min3"),
        .min_size = 3, .max_size = 4 });
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &st), 0);
    assert_int_equal(st.size, 3);
    assert_int_equal(st.idle, 3);
    /* The server sees them too. */
    PGconn *c = PQconnectdb(tcp_conninfo(ci, sizeof ci, NULL));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_string_equal(query1(c, "SELECT count(*) FROM pg_stat_activity "
                                  "WHERE application_name = 'pk_min3'",
                               v, sizeof v),
                        "3");
    PQfinish(c);
    pk_pg_pool_destroy(pool);
}

static void
test_wrong_password_fails_by_connect_timeout_with_libpq_message(void **state)
{
    (void)state;
    char ci[256];
    pk_pg_lease l;
    pk_error err;
    struct timespec t0;

    pk_pg_pool *pool = make_pool(&(pk_pg_options){
        .conninfo = tcp_conninfo(ci, sizeof ci,
                                 "user=pk_pw password=wrong"),
        .connect_timeout_ms = 2000 });
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = pk_pg_acquire(pool, &l, LONG_MS, &err);
    uint64_t took = elapsed_ms(&t0);
    assert_int_equal(rc, PK_ECONNECT);
    assert_int_equal(err.code, PK_ECONNECT);
    if (!strstr(err.msg, "password authentication failed"))
        fail_msg("unexpected message: %s", err.msg);
    assert_null(strchr(err.msg, '\n')); /* trimmed to one line */
    assert_true(took < LONG_MS / 2);
    pk_pg_pool_destroy(pool);

    /* The right password works: the failure above was the password. */
    pool = make_pool(&(pk_pg_options){
        .conninfo = tcp_conninfo(ci, sizeof ci,
                                 "user=pk_pw password=pk_secret") });
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_pool_destroy(pool);
}

static void
test_silent_server_fails_by_connect_timeout(void **state)
{
    (void)state;
    /* A socket that listens and never accepts: the kernel completes the
     * TCP handshake, libpq sends its startup packet, nobody answers. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t alen = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(s >= 0);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s, 16), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);

    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres "
             "dbname=postgres sslmode=disable", ntohs(a.sin_port));
    pk_pg_pool *pool = make_pool(&(pk_pg_options){
        .conninfo = ci, .connect_timeout_ms = 300 });
    pk_pg_lease l;
    pk_error err;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = pk_pg_acquire(pool, &l, LONG_MS, &err);
    uint64_t took = elapsed_ms(&t0);
    assert_int_equal(rc, PK_ECONNECT);
    if (!strstr(err.msg, "timed out after 300 ms"))
        fail_msg("unexpected message: %s", err.msg);
    assert_true(took >= 250);
    assert_true(took < LONG_MS / 2);
    pk_pg_pool_destroy(pool);
    close(s);
}

static void
check_transaction_left_open(int mode, const char *sql)
{
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1,
                                                   .reset = mode });
    pk_pg_lease l;
    pk_error err;
    char v[32];

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    int pid = PQbackendPID(l.conn);
    exec_ok(l.conn, "BEGIN");
    exec_ok(l.conn, "INSERT INTO pk_tx VALUES (1)");
    PQclear(PQexec(l.conn, sql)); /* may fail on purpose */
    assert_int_not_equal(PQtransactionStatus(l.conn), PQTRANS_IDLE);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_int_equal(PQbackendPID(l.conn), pid); /* the same connection */
    assert_int_equal(PQtransactionStatus(l.conn), PQTRANS_IDLE);
    assert_string_equal(query1(l.conn, "SELECT count(*) FROM pk_tx", v,
                               sizeof v),
                        "0");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_pool_destroy(pool);
}

static void
test_open_transaction_is_rolled_back(void **state)
{
    (void)state;
    check_transaction_left_open(PK_PG_RESET_FULL, "SELECT 1");
    check_transaction_left_open(PK_PG_RESET_ROLLBACK, "SELECT 1");
}

static void
test_failed_transaction_is_rolled_back(void **state)
{
    (void)state;
    check_transaction_left_open(PK_PG_RESET_FULL, "SELECT 1/0");
    check_transaction_left_open(PK_PG_RESET_ROLLBACK, "SELECT 1/0");
}

/* Returns the application_name the second borrower of the one
 * connection sees after the first set it. */
static void
second_borrower_sees(int mode, char *out, size_t size)
{
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1,
                                                   .reset = mode });
    pk_pg_lease l;
    pk_error err;

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    int pid = PQbackendPID(l.conn);
    exec_ok(l.conn, "SET application_name = 'pk_leaky'");
    exec_ok(l.conn, "CREATE TEMP TABLE pk_tmp (x int)");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_int_equal(PQbackendPID(l.conn), pid);
    assert_non_null(query1(l.conn, "SHOW application_name", out, size));
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_pool_destroy(pool);
}

static void
test_session_setting_does_not_leak_with_full_reset(void **state)
{
    (void)state;
    char v[64];

    second_borrower_sees(PK_PG_RESET_FULL, v, sizeof v);
    assert_string_not_equal(v, "pk_leaky");
    /* The contrast that shows the test can fail: rollback mode promises
     * nothing about session state, and the setting stays. */
    second_borrower_sees(PK_PG_RESET_ROLLBACK, v, sizeof v);
    assert_string_equal(v, "pk_leaky");
}

static void
test_pool_recovers_after_server_restart(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){
        .max_size = 2, .min_size = 2, .check_after_ms = PK_ALWAYS });
    pk_pg_lease l;
    pk_error err;
    char v[32];

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    int old_pid = PQbackendPID(l.conn);
    assert_string_equal(query1(l.conn, "SELECT 1", v, sizeof v), "1");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);

    assert_int_equal(server("restart"), 0);

    /* Both idle connections are dead; neither is lent. */
    for (int i = 0; i < 2; i++) {
        pk_pg_lease ls[2];
        for (int k = 0; k < 2; k++) {
            int rc = pk_pg_acquire(pool, &ls[k], LONG_MS, &err);
            if (rc)
                fail_msg("acquire after restart: %s: %s", pk_err_name(rc),
                         err.msg);
            assert_int_not_equal(PQbackendPID(ls[k].conn), old_pid);
            assert_string_equal(query1(ls[k].conn, "SELECT 1", v, sizeof v),
                                "1");
        }
        for (int k = 0; k < 2; k++)
            assert_int_equal(pk_pg_release(pool, &ls[k], PK_RELEASE_OK), 0);
    }
    pk_pool_stats st;
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &st), 0);
    assert_true(st.check_failures >= 2);
    pk_pg_pool_destroy(pool);
}

/* A child that inherited the pool destroys it: forget_in_child closes
 * its copies of the sockets without a Terminate message, so the parent's
 * sessions go on (a Terminate would end them on the server). */
static void
test_fork_child_destroy_leaves_parent_connections_alive(void **state)
{
    (void)state;
    if (SANITIZED) {
        printf("test_pg: skip: fork from a threaded parent under a "
               "sanitizer (test_util.h)\n");
        skip();
    }
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .min_size = 2,
                                                   .max_size = 2 });
    pk_pg_lease l;
    pk_error err;
    char v[32];

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pk_pg_pool_destroy(pool); /* the idle one: forgotten */
        _exit(pk_pg_release(pool, &l, PK_RELEASE_OK) == 0 ? 0 : 1);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_string_equal(query1(l.conn, "SELECT 1", v, sizeof v), "1");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_lease a, b;
    assert_int_equal(pk_pg_acquire(pool, &a, LONG_MS, &err), 0);
    assert_int_equal(pk_pg_acquire(pool, &b, LONG_MS, &err), 0);
    assert_string_equal(query1(a.conn, "SELECT 1", v, sizeof v), "1");
    assert_string_equal(query1(b.conn, "SELECT 1", v, sizeof v), "1");
    pk_pool_stats ps;
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &ps), 0);
    assert_int_equal(ps.created, 2); /* nothing was lost and remade */
    assert_int_equal(pk_pg_release(pool, &a, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pg_release(pool, &b, PK_RELEASE_OK), 0);
    pk_pg_pool_destroy(pool);
}

static void
test_busy_or_dead_connection_is_not_lent_again(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    pk_pg_lease l;
    pk_error err;
    pk_pool_stats st;
    char v[32];

    /* Busy: a query sent and its results never read. */
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    int pid = PQbackendPID(l.conn);
    assert_int_equal(PQsendQuery(l.conn, "SELECT pg_sleep(0.05)"), 1);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &st), 0);
    assert_int_equal(st.destroyed, 1);
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_int_not_equal(PQbackendPID(l.conn), pid);

    /* Dead: its backend terminated by another session while lent; the
     * caller's release OK counts as BROKEN. */
    pid = PQbackendPID(l.conn);
    char ci[256], sql[64];
    PGconn *admin = PQconnectdb(tcp_conninfo(ci, sizeof ci, NULL));
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
    assert_string_equal(query1(admin, sql, v, sizeof v), "t");
    PQfinish(admin);
    for (int i = 0; i < 100 && PQstatus(l.conn) == CONNECTION_OK; i++) {
        PQclear(PQexec(l.conn, "SELECT 1")); /* fails once it is gone */
        sleep_ms(10);
    }
    assert_int_equal(PQstatus(l.conn), CONNECTION_BAD);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &st), 0);
    assert_int_equal(st.destroyed, 2);
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_string_equal(query1(l.conn, "SELECT 1", v, sizeof v), "1");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_pool_destroy(pool);
}

static void
test_zero_timeout_and_exhausted_pool(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    pk_pg_lease a, b;
    pk_error err;

    assert_int_equal(pk_pg_acquire(pool, &a, 0, &err), PK_EAGAIN);
    assert_int_equal(pk_pg_acquire(pool, &a, LONG_MS, &err), 0);
    assert_int_equal(pk_pg_acquire(pool, &b, 0, &err), PK_EAGAIN);
    assert_int_equal(pk_pg_acquire(pool, &b, 100, &err), PK_ETIMEDOUT);
    assert_int_equal(err.code, PK_ETIMEDOUT);
    assert_int_equal(pk_pg_release(pool, &a, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pg_acquire(pool, &b, 0, &err), 0);
    assert_int_equal(pk_pg_release(pool, &b, PK_RELEASE_OK), 0);
    pk_pg_pool_destroy(pool);
}

static void
test_bad_input_is_einval(void **state)
{
    (void)state;
    pk_pg_pool *pool = NULL;
    pk_error err;
    char ci[256];
    tcp_conninfo(ci, sizeof ci, NULL);

    assert_int_equal(pk_pg_pool_create(NULL, &(pk_pg_options){
                                                 .conninfo = ci }, &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_pool_create(&pool, NULL, &err), PK_EINVAL);
    assert_int_equal(pk_pg_pool_create(&pool, &(pk_pg_options){ 0 }, &err),
                     PK_EINVAL);
    assert_non_null(strstr(err.msg, "conninfo"));
    assert_int_equal(pk_pg_pool_create(&pool, &(pk_pg_options){
                                                  .conninfo = "host='x" },
                                       &err),
                     PK_EINVAL);
    assert_non_null(strstr(err.msg, "unterminated"));
    assert_int_equal(pk_pg_pool_create(&pool, &(pk_pg_options){
                                 .conninfo = "postgresql://h/db?nosuch=1" },
                                       &err),
                     PK_EINVAL);
    assert_non_null(strstr(err.msg, "nosuch"));
    assert_int_equal(pk_pg_pool_create(&pool, &(pk_pg_options){
                                 .conninfo = ci, .connect_timeout_ms = -5 },
                                       &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_pool_create(&pool, &(pk_pg_options){
                                 .conninfo = ci, .reset_timeout_ms = -1 },
                                       &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_pool_create(&pool, &(pk_pg_options){
                                 .conninfo = ci, .reset = 7 }, &err),
                     PK_EINVAL);
    assert_int_equal(pk_pg_pool_create(&pool, &(pk_pg_options){
                                 .conninfo = ci, .min_size = 9,
                                 .max_size = 2 }, &err),
                     PK_EINVAL);
    assert_non_null(strstr(err.msg, "min_size"));
    assert_null(pool);

    pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    pk_pg_lease l;
    assert_int_equal(pk_pg_acquire(NULL, &l, 10, &err), PK_EINVAL);
    assert_int_equal(pk_pg_acquire(pool, NULL, 10, &err), PK_EINVAL);
    assert_int_equal(pk_pg_acquire(pool, &l, -5, &err), PK_EINVAL);
    assert_int_equal(pk_pg_release(NULL, &l, PK_RELEASE_OK), PK_EINVAL);
    assert_int_equal(pk_pg_release(pool, NULL, PK_RELEASE_OK), PK_EINVAL);
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_int_equal(pk_pg_release(pool, &l, 42), PK_EINVAL);
    assert_non_null(l.conn); /* nothing changed */
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), PK_EINVAL);
    assert_null(pk_pg_pool_core(NULL));
    assert_int_equal(pk_pg_pool_close(NULL, 0), PK_EINVAL);
    pk_pg_pool_destroy(NULL);
    pk_pg_pool_destroy(pool);
}


/* ---- SQLSTATE, pk_pg_exec, connection-class errors ------------------ */

/* The packing PostgreSQL's MAKE_SQLSTATE uses, written out here so the
 * test does not share the library's code. */
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

int
main(void)
{
    const char *required = getenv("PK_PG_REQUIRED");
    int must = required && strcmp(required, "1") == 0;
    char cmd[PATH_MAX + 64];

    if (find_script() != 0) {
        printf("test_pg: skip: tests/support/pg_server.sh not found\n");
        return must;
    }
    snprintf(cmd, sizeof cmd, "bash '%s' probe - >/dev/null", script);
    int st = system(cmd);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("test_pg: skip: PostgreSQL's server is not installed "
               "(apt-get install postgresql)%s\n",
               must ? "; PK_PG_REQUIRED=1, so this is a failure" : "");
        return must;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_select_1_release),
        cmocka_unit_test(test_unix_socket_and_uri_conninfo_work),
        cmocka_unit_test(test_min_size_connections_made_at_create),
        cmocka_unit_test(
            test_wrong_password_fails_by_connect_timeout_with_libpq_message),
        cmocka_unit_test(test_silent_server_fails_by_connect_timeout),
        cmocka_unit_test(test_open_transaction_is_rolled_back),
        cmocka_unit_test(test_failed_transaction_is_rolled_back),
        cmocka_unit_test(test_session_setting_does_not_leak_with_full_reset),
        cmocka_unit_test(test_busy_or_dead_connection_is_not_lent_again),
        cmocka_unit_test(test_zero_timeout_and_exhausted_pool),
        cmocka_unit_test(
            test_fork_child_destroy_leaves_parent_connections_alive),
        cmocka_unit_test(test_bad_input_is_einval),
        cmocka_unit_test(test_sqlstate_of_failed_query_in_error),
        cmocka_unit_test(test_exec_with_parameters),
        cmocka_unit_test(
            test_exec_timeout_cancels_query_and_connection_comes_back_idle),
        cmocka_unit_test(test_connection_class_error_releases_broken),
        cmocka_unit_test(test_release_result_decides_from_sqlstate),
        cmocka_unit_test(test_pool_recovers_after_server_restart),
    };
    return cmocka_run_group_tests_name("pg", tests, group_setup,
                                       group_teardown);
}
