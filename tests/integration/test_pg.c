/* tests/integration/test_pg.c - the PostgreSQL pool against a real
 * server (pg_fixture.h): connecting, lending, health, resets, fork, init
 * hooks, stats. Statements and transactions are test_pg_query.c's.
 *
 * The few elapsed-time assertions are loose bounds that separate "by the
 * connect timeout" from "by the acquire timeout", an order of magnitude
 * apart. */
#include "pg_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <poll.h>
#include <sys/socket.h>

#define LONG_MS 20000 /* acquire timeouts only a broken pool reaches */
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
    /* The core's account of who holds what: the leak's site. */
    if (!strstr(err.msg, "1 of 1 lent") || !strstr(err.msg, "test_pg.c:"))
        fail_msg("the timeout does not name the holder: %s", err.msg);
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
/* ---- init hook, context, reset modes ------------------------------------ */

static atomic_int fini_calls;

struct conn_ctx {
    int magic;
    int pid;
};

static int
init_ctx(struct pg_conn *conn, void **ctx, void *user, pk_error *err)
{
    assert_ptr_equal(user, &fini_calls);
    assert_null(*ctx);
    struct conn_ctx *c = malloc(sizeof *c);
    if (!c)
        return pk_error_set(err, PK_ENOMEM, 0, "no memory");
    c->magic = 0x5eed;
    c->pid = PQbackendPID(conn);
    PGresult *r = PQprepare(conn, "from_hook", "SELECT 7", 0, NULL);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        free(c);
        return pk_error_set(err, PK_EADAPTER, 0, "prepare failed");
    }
    *ctx = c;
    return 0;
}

static void
fini_ctx(struct pg_conn *conn, void *ctx, void *user)
{
    (void)conn;
    (void)user;
    assert_int_equal(((struct conn_ctx *)ctx)->magic, 0x5eed);
    free(ctx);
    atomic_fetch_add(&fini_calls, 1);
}

static int
count_prepared(PGconn *c, const char *name)
{
    char sql[128], v[16];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_prepared_statements "
             "WHERE name = '%s'", name);
    return atoi(query1(c, sql, v, sizeof v));
}

/* init_sql and the init hook run once per connection; their prepared
 * statements survive the full reset, the borrower's do not; ctx reaches
 * every borrower and fini. */
static void
test_init_sql_and_hook_give_each_connection_its_context(void **state)
{
    (void)state;
    atomic_store(&fini_calls, 0);
    pk_pg_pool *pool = make_pool(&(pk_pg_options){
        .max_size = 1,
        .init_sql = "PREPARE from_sql AS SELECT 6",
        .init = init_ctx, .fini = fini_ctx, .init_user = &fini_calls });
    pk_pg_lease l;
    pk_error err;
    char v[16];

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    struct conn_ctx *ctx = l.ctx;
    assert_non_null(ctx);
    assert_int_equal(ctx->pid, PQbackendPID(l.conn));
    assert_string_equal(query1(l.conn, "EXECUTE from_sql", v, sizeof v), "6");
    exec_ok(l.conn, "PREPARE borrowers AS SELECT 8");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_ptr_equal(l.ctx, ctx);
    assert_string_equal(query1(l.conn, "EXECUTE from_hook", v, sizeof v), "7");
    assert_int_equal(count_prepared(l.conn, "from_sql"), 1);
    assert_int_equal(count_prepared(l.conn, "borrowers"), 0);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(atomic_load(&fini_calls), 0);
    pk_pg_pool_destroy(pool);
    assert_int_equal(atomic_load(&fini_calls), 1);
}

static void
test_failing_init_is_a_failed_connect(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){
        .init_sql = "SELECT pk_no_such_function()" });
    pk_pg_lease l;
    pk_error err;
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), PK_EADAPTER);
    assert_true(elapsed_ms(&t0) < LONG_MS / 4);
    assert_non_null(strstr(err.msg, "init_sql"));
    assert_non_null(strstr(err.msg, "pk_no_such_function"));
    char st[6];
    assert_int_equal(pk_pg_sqlstate(err.sys, st), 0);
    assert_string_equal(st, "42883"); /* undefined_function */
    pk_pg_stats s;
    assert_int_equal(pk_pg_stats_get(pool, &s), 0);
    assert_true(s.connects_failed >= 1);
    assert_int_equal(s.connects_ok, 0);
    pk_pg_pool_destroy(pool);
}

/* The list: search_path, a role, a temp table, a prepared
 * statement, LISTEN, an advisory lock, an open transaction, a cursor. */
static void
leave_session_state(PGconn *c)
{
    exec_ok(c, "SET search_path = pk_nowhere");
    exec_ok(c, "SET ROLE pk_role");
    exec_ok(c, "CREATE TEMP TABLE pk_tmp2 (x int)");
    exec_ok(c, "PREPARE pk_mine AS SELECT 1");
    exec_ok(c, "LISTEN pk_channel");
    exec_ok(c, "SELECT pg_advisory_lock(4242)");
    exec_ok(c, "DECLARE pk_cur CURSOR WITH HOLD FOR SELECT 1");
    exec_ok(c, "BEGIN");
    exec_ok(c, "SELECT 1");
}

static void
test_full_reset_leaves_nothing_to_the_next_borrower(void **state)
{
    (void)state;
    char ci[256], v[256];
    PGconn *admin = PQconnectdb(tcp_conninfo(ci, sizeof ci, NULL));
    PQclear(PQexec(admin, "CREATE ROLE pk_role"));
    PQfinish(admin);
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    pk_pg_lease l;
    pk_error err;

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    int pid = PQbackendPID(l.conn);
    leave_session_state(l.conn);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_int_equal(PQbackendPID(l.conn), pid);
    assert_int_equal(PQtransactionStatus(l.conn), PQTRANS_IDLE);
    assert_string_equal(query1(l.conn, "SHOW search_path", v, sizeof v),
                        "\"$user\", public");
    assert_string_equal(query1(l.conn, "SELECT current_user", v, sizeof v),
                        "postgres");
    assert_string_equal(
        query1(l.conn, "SELECT count(*) FROM pg_tables WHERE tablename = "
               "'pk_tmp2'", v, sizeof v), "0");
    assert_int_equal(count_prepared(l.conn, "pk_mine"), 0);
    assert_string_equal(query1(l.conn, "SELECT count(*) FROM "
                               "pg_listening_channels()", v, sizeof v), "0");
    assert_string_equal(query1(l.conn, "SELECT count(*) FROM pg_locks WHERE "
                               "locktype = 'advisory' AND pid = "
                               "pg_backend_pid()", v, sizeof v), "0");
    assert_string_equal(query1(l.conn, "SELECT count(*) FROM pg_cursors", v,
                               sizeof v), "0");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_stats s;
    assert_int_equal(pk_pg_stats_get(pool, &s), 0);
    assert_int_equal(s.resets_full, 2);
    assert_int_equal(s.resets_rollback, 1);
    assert_int_equal(s.resets_failed, 0);
    pk_pg_pool_destroy(pool);
}

static void
test_custom_reset_runs_its_sql(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){
        .max_size = 1, .reset = PK_PG_RESET_CUSTOM,
        .reset_sql = "RESET search_path; DEALLOCATE ALL" });
    pk_pg_lease l;
    pk_error err;
    char v[64];

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    exec_ok(l.conn, "SET search_path = pk_nowhere");
    exec_ok(l.conn, "SET application_name = 'pk_kept'");
    exec_ok(l.conn, "PREPARE pk_mine AS SELECT 1");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_string_equal(query1(l.conn, "SHOW search_path", v, sizeof v),
                        "\"$user\", public");
    assert_string_equal(query1(l.conn, "SHOW application_name", v, sizeof v),
                        "pk_kept"); /* only what reset_sql says goes */
    assert_int_equal(count_prepared(l.conn, "pk_mine"), 0);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_stats s;
    assert_int_equal(pk_pg_stats_get(pool, &s), 0);
    assert_int_equal(s.resets_custom, 2);
    pk_pg_pool_destroy(pool);

    /* PgBouncer's transaction mode: the full reset becomes a ROLLBACK. */
    pool = make_pool(&(pk_pg_options){ .max_size = 1,
                                       .pgbouncer_transaction_mode = 1 });
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    exec_ok(l.conn, "SET application_name = 'pk_kept'");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    assert_string_equal(query1(l.conn, "SHOW application_name", v, sizeof v),
                        "pk_kept");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pg_stats_get(pool, &s), 0);
    assert_int_equal(s.resets_full, 0);
    pk_pg_pool_destroy(pool);
}

/* ---- health --------------------------------------------------------------- */

static int
backend_pid(pk_pg_pool *pool)
{
    pk_pg_lease l;
    pk_error err;
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    int pid = PQbackendPID(l.conn);
    char v[16];
    assert_string_equal(query1(l.conn, "SELECT 1", v, sizeof v), "1");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    return pid;
}

/* The server ends idle sessions (idle_session_timeout, and
 * pg_terminate_backend): the next acquire lends a live connection. */
static void
test_connections_ended_by_the_server_are_not_lent(void **state)
{
    (void)state;
    char ci[256], sql[96], v[16];
    for (int query = 0; query < 2; query++) {
        pk_pg_pool *pool = make_pool(&(pk_pg_options){
            .conninfo = tcp_conninfo(
                ci, sizeof ci,
                "user=postgres options='-c idle_session_timeout=100'"),
            .max_size = 1, .check_after_ms = PK_ALWAYS,
            .check_query = query });
        int pid = backend_pid(pool);
        sleep_ms(400);
        assert_int_not_equal(backend_pid(pool), pid);
        pk_pg_stats s;
        assert_int_equal(pk_pg_stats_get(pool, &s), 0);
        assert_int_equal(s.checks_failed, 1);
        pk_pg_pool_destroy(pool);
    }

    pk_pg_pool *pool = make_pool(&(pk_pg_options){
        .max_size = 1, .check_after_ms = PK_ALWAYS });
    int pid = backend_pid(pool);
    PGconn *admin = PQconnectdb(tcp_conninfo(ci, sizeof ci, NULL));
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
    assert_string_equal(query1(admin, sql, v, sizeof v), "t");
    PQfinish(admin);
    sleep_ms(100);
    assert_int_not_equal(backend_pid(pool), pid);
    pk_pg_pool_destroy(pool);
}

/* A query left running at release is cancelled on the server, not left
 * to run: the pool closes the connection and a thread of its own sends
 * the cancel. */
static void
test_abandoned_query_is_cancelled_on_the_server(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    pk_pg_lease l;
    pk_error err;
    char ci[256], sql[160], v[16];

    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    int pid = PQbackendPID(l.conn);
    assert_int_equal(PQsendQuery(l.conn, "SELECT pg_sleep(60)"), 1);
    sleep_ms(50);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    PGconn *admin = PQconnectdb(tcp_conninfo(ci, sizeof ci, NULL));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE "
             "pid = %d AND state = 'active'", pid);
    int gone = 0;
    for (int i = 0; i < 500 && !gone; i++) {
        gone = strcmp(query1(admin, sql, v, sizeof v), "0") == 0;
        if (!gone)
            sleep_ms(10);
    }
    PQfinish(admin);
    assert_true(gone);
    pk_pg_stats s;
    assert_int_equal(pk_pg_stats_get(pool, &s), 0);
    assert_int_equal(s.queries_cancelled, 1);
    pk_pg_pool_destroy(pool);
}

/* ---- leaks, async, stats ------------------------------------------------------ */

struct seen_event {
    atomic_int held_too_long;
    atomic_int recorded; /* file and line written (release) */
    char file[128];
    int line;
};

static void
on_event(void *user, const pk_event *ev)
{
    struct seen_event *s = user;
    if (ev->kind != PK_EVENT_HELD_TOO_LONG)
        return;
    if (atomic_fetch_add(&s->held_too_long, 1) == 0) {
        snprintf(s->file, sizeof s->file, "%s", ev->file ? ev->file : "");
        s->line = ev->line;
        atomic_store(&s->recorded, 1);
    }
}

static void
test_lease_held_too_long_is_reported_with_its_site(void **state)
{
    (void)state;
    struct seen_event seen = { 0 };
    pk_pg_pool *pool = make_pool(&(pk_pg_options){
        .held_too_long_ms = 50, .event = on_event, .event_user = &seen });
    pk_pg_lease l;
    pk_error err;

    int line = __LINE__ + 1;
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    for (int i = 0; i < 300 && atomic_load(&seen.recorded) == 0; i++)
        sleep_ms(10);
    assert_true(atomic_load(&seen.recorded));
    assert_non_null(strstr(seen.file, "test_pg.c"));
    assert_int_equal(seen.line, line);
    pk_pg_stats s;
    assert_int_equal(pk_pg_stats_get(pool, &s), 0);
    assert_true(s.leaks_suspected >= 1);
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pg_pool_destroy(pool);
}

static void
test_async_acquire_through_the_ticket_fd(void **state)
{
    (void)state;
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .max_size = 1 });
    pk_pool_ticket *t = NULL;
    pk_pg_lease l;
    pk_error err;
    int ready = 0;
    char v[16];

    assert_int_equal(pk_pg_acquire_async(pool, &t, LONG_MS, NULL, NULL,
                                         &ready),
                     0);
    if (!ready) {
        int fd = pk_pool_ticket_fd(t);
        assert_true(fd >= 0);
        struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
        assert_int_equal(poll(&p, 1, LONG_MS), 1);
    }
    assert_int_equal(pk_pg_ticket_take(pool, t, &l, &err), 0);
    assert_non_null(l.conn);
    assert_true(PQsocket(l.conn) >= 0);
    assert_string_equal(query1(l.conn, "SELECT 1", v, sizeof v), "1");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pg_acquire_async(NULL, &t, 0, NULL, NULL, &ready),
                     PK_EINVAL);
    assert_int_equal(pk_pg_ticket_take(NULL, t, &l, &err), PK_EINVAL);
    assert_int_equal(pk_pg_ticket_take(pool, NULL, &l, &err), PK_EINVAL);
    pk_pg_stats s;
    assert_int_equal(pk_pg_stats_get(pool, &s), 0);
    assert_int_equal(s.connects_ok, 1);
    assert_true(s.connect_p50_us > 0);
    assert_true(s.connect_p99_us >= s.connect_p50_us);
    assert_int_equal(s.core.created, 1);
    assert_int_equal(pk_pg_stats_get(NULL, &s), PK_EINVAL);
    assert_int_equal(pk_pg_stats_get(pool, NULL), PK_EINVAL);
    pk_pg_pool_destroy(pool);
}

/* ---- many at once, server down ------------------------------------------------ */

struct storm {
    pk_pg_pool *pool;
    atomic_int ok;
    atomic_int stop;
    atomic_int max_creating;
};

static void *
storm_thread(void *arg)
{
    struct storm *s = arg;
    PGresult *r = NULL;
    pk_error err;
    if (pk_pg_exec(s->pool, "SELECT 1", 0, NULL, 60000, &r, &err) == 0)
        atomic_fetch_add(&s->ok, 1);
    PQclear(r);
    return NULL;
}

static void *
storm_sampler(void *arg)
{
    struct storm *s = arg;
    while (!atomic_load(&s->stop)) {
        pk_pool_stats st;
        if (pk_pool_stats_get(pk_pg_pool_core(s->pool), &st) == 0 &&
            (int)st.creating > atomic_load(&s->max_creating))
            atomic_store(&s->max_creating, (int)st.creating);
        sleep_ms(1);
    }
    return NULL;
}

/* Hundreds of threads arrive at an empty pool: at most max_creating
 * connects run at once and at most max_size connections exist, on the
 * pool's count and on the server's. */
static void
test_many_threads_at_once_make_no_connection_storm(void **state)
{
    (void)state;
    int n = SANITIZED ? 100 : 500;
    struct storm s = { 0 };
    char application[] = "application_name=pk_storm user=postgres", ci[256];
    s.pool = make_pool(&(pk_pg_options){
        .conninfo = tcp_conninfo(ci, sizeof ci, application),
        .max_size = 8, .max_creating = 4 });
    pthread_t sampler, *t = calloc((size_t)n, sizeof *t);
    assert_non_null(t);
    assert_int_equal(pthread_create(&sampler, NULL, storm_sampler, &s), 0);
    int started = 0;
    for (; started < n; started++)
        if (pthread_create(&t[started], NULL, storm_thread, &s) != 0)
            break;
    assert_true(started >= n / 2);
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    atomic_store(&s.stop, 1);
    pthread_join(sampler, NULL);
    free(t);
    assert_int_equal(atomic_load(&s.ok), started);
    assert_true(atomic_load(&s.max_creating) <= 4);
    pk_pg_stats st;
    assert_int_equal(pk_pg_stats_get(s.pool, &st), 0);
    assert_true(st.core.created <= 8);
    char v[16];
    PGconn *admin = PQconnectdb(tcp_conninfo(ci, sizeof ci, NULL));
    int on_server = atoi(query1(admin, "SELECT count(*) FROM pg_stat_activity "
                                "WHERE application_name = 'pk_storm'",
                                v, sizeof v));
    PQfinish(admin);
    assert_true(on_server >= 1 && on_server <= 8);
    pk_pg_pool_destroy(s.pool);
}

/* Server down at start: acquire fails by the connect, with libpq's
 * message; a caller whose deadline ends before the next attempt fails
 * at once with it, replayed; the pool fills when the server is back. */
static void
test_server_down_then_back(void **state)
{
    (void)state;
    assert_int_equal(server("stop"), 0);
    pk_pg_pool *pool = make_pool(&(pk_pg_options){ .min_size = 2,
                                                   .max_size = 2 });
    pk_pg_lease l;
    pk_error err;
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), PK_ECONNECT);
    assert_true(elapsed_ms(&t0) < LONG_MS / 4);
    assert_non_null(strstr(err.msg, "onnection refused"));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = pk_pg_acquire(pool, &l, 5, &err);
    assert_true(rc == PK_ECONNECT || rc == PK_ETIMEDOUT);
    if (rc == PK_ECONNECT)
        assert_non_null(strstr(err.msg, "onnection refused"));
    assert_true(elapsed_ms(&t0) < 1000);

    assert_int_equal(server("start"), 0);
    assert_int_equal(pk_pg_acquire(pool, &l, LONG_MS, &err), 0);
    char v[16];
    assert_string_equal(query1(l.conn, "SELECT 1", v, sizeof v), "1");
    assert_int_equal(pk_pg_release(pool, &l, PK_RELEASE_OK), 0);
    pk_pool_stats st;
    for (int i = 0; i < 500; i++) {
        assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(pool), &st), 0);
        if (st.idle == 2)
            break;
        sleep_ms(10);
    }
    assert_int_equal(st.idle, 2);
    pk_pg_pool_destroy(pool);
}

/* ---- restart under load ------------------------------------------------------ */

struct load {
    pk_pg_pool *pool;
    atomic_int phase;  /* 0 before the restart, 1 during, 2 after */
    atomic_int stop;
    atomic_int ok_after, failed_after, failed_during;
    atomic_int unclear; /* a failure without a message, or a surprising code */
};

static void *
load_thread(void *arg)
{
    struct load *ld = arg;
    while (!atomic_load(&ld->stop)) {
        PGresult *r = NULL;
        pk_error err = { 0, 0, "" };
        int phase = atomic_load(&ld->phase);
        int rc = pk_pg_exec(ld->pool, "SELECT 1", 0, NULL, 3000, &r, &err);
        PQclear(r);
        if (rc == 0) {
            if (phase == 2)
                atomic_fetch_add(&ld->ok_after, 1);
            continue;
        }
        if (phase == 2)
            atomic_fetch_add(&ld->failed_after, 1);
        else
            atomic_fetch_add(&ld->failed_during, 1);
        if (err.msg[0] == '\0' ||
            (rc != PK_EADAPTER && rc != PK_ECONNECT && rc != PK_ETIMEDOUT))
            atomic_fetch_add(&ld->unclear, 1);
        sleep_ms(5);
    }
    return NULL;
}

/* 16 threads run queries while the server restarts (fast, then
 * immediate: a crash): queries in flight fail with a clear error; once
 * it is back, no caller gets a dead connection and the pool is full. */
static void
test_server_restart_under_load(void **state)
{
    (void)state;
    enum { THREADS = 16 };
    struct load ld = { 0 };
    ld.pool = make_pool(&(pk_pg_options){ .min_size = 4, .max_size = 4 });
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, load_thread, &ld), 0);
    const char *modes[] = { "fast", "immediate" };
    for (int m = 0; m < 2; m++) {
        sleep_ms(200);
        atomic_store(&ld.phase, 1);
        setenv("PG_STOP_MODE", modes[m], 1);
        assert_int_equal(server("restart"), 0);
        unsetenv("PG_STOP_MODE");
        /* Back: the pool recovers within its backoff (100 ms while
         * callers wait); then nothing may fail. */
        sleep_ms(500);
        atomic_store(&ld.ok_after, 0);
        atomic_store(&ld.failed_after, 0);
        atomic_store(&ld.phase, 2);
        sleep_ms(500);
        if (atomic_load(&ld.failed_after) != 0)
            fail_msg("%s: %d queries failed after the restart (%d ok)",
                     modes[m], atomic_load(&ld.failed_after),
                     atomic_load(&ld.ok_after));
        assert_true(atomic_load(&ld.ok_after) > THREADS);
        atomic_store(&ld.phase, 0);
    }
    atomic_store(&ld.stop, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&ld.unclear), 0);
    pk_pool_stats st;
    assert_int_equal(pk_pool_stats_get(pk_pg_pool_core(ld.pool), &st), 0);
    assert_int_equal(st.size, 4);
    assert_int_equal(st.lent, 0);
    pk_pg_pool_destroy(ld.pool);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_select_1_release),
        cmocka_unit_test(test_unix_socket_and_uri_conninfo_work),
        cmocka_unit_test(test_min_size_connections_made_at_create),
        cmocka_unit_test(test_wrong_password_fails_by_connect_timeout_with_libpq_message),
        cmocka_unit_test(test_silent_server_fails_by_connect_timeout),
        cmocka_unit_test(test_open_transaction_is_rolled_back),
        cmocka_unit_test(test_failed_transaction_is_rolled_back),
        cmocka_unit_test(test_session_setting_does_not_leak_with_full_reset),
        cmocka_unit_test(test_busy_or_dead_connection_is_not_lent_again),
        cmocka_unit_test(test_zero_timeout_and_exhausted_pool),
        cmocka_unit_test(test_fork_child_destroy_leaves_parent_connections_alive),
        cmocka_unit_test(test_bad_input_is_einval),
        cmocka_unit_test(test_init_sql_and_hook_give_each_connection_its_context),
        cmocka_unit_test(test_failing_init_is_a_failed_connect),
        cmocka_unit_test(test_full_reset_leaves_nothing_to_the_next_borrower),
        cmocka_unit_test(test_custom_reset_runs_its_sql),
        cmocka_unit_test(test_connections_ended_by_the_server_are_not_lent),
        cmocka_unit_test(test_abandoned_query_is_cancelled_on_the_server),
        cmocka_unit_test(test_lease_held_too_long_is_reported_with_its_site),
        cmocka_unit_test(test_async_acquire_through_the_ticket_fd),
        cmocka_unit_test(test_many_threads_at_once_make_no_connection_storm),
        cmocka_unit_test(test_server_down_then_back),
        cmocka_unit_test(test_pool_recovers_after_server_restart),
        cmocka_unit_test(test_server_restart_under_load),
    };
    return pg_main("test_pg", tests, sizeof tests / sizeof tests[0]);
}
