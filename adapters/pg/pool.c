/* adapters/pg/pool.c - the PostgreSQL pool: libpq connections as pk_pool
 * resources (include/poolkit/pg.h says what each hook does).
 *
 * The core owns the population; this file owns only the hooks and the
 * acquire path. A pk_pg_pool is the hooks' `user`: it lives until the
 * core's user_free, which runs after the last destroy hook, so a lease
 * released after pk_pg_pool_destroy still finds it.
 *
 * Connect. PQconnectStartParams with the caller's conninfo as an
 * expandable dbname (so any conninfo or URI works, several hosts
 * included), then PQconnectPoll driven by pk_wait_fd on PQsocket (which may
 * change between hosts) until one overall deadline, connect_timeout_ms:
 * PQconnectPoll applies no timeout of its own. init_sql and the init hook
 * follow under the same deadline.
 *
 * Acquire. A blocking acquire that needs a connect would run the create
 * hook on the acquiring thread and retry failed connects until its own
 * deadline (the core's rule). Instead the adapter waits on a core ticket
 * (pk_pool_acquire_async), whose creates run on the core's helper thread,
 * and on the adapter's failure sequence: each failed connect bumps
 * fail_seq under mu and wakes every waiter. A waiter that sees the sequence
 * move while it has not been served withdraws its ticket and returns that
 * failure, so a wrong password reaches the caller after one connect, not
 * after the acquire timeout. A 0-timeout acquire goes straight to the
 * core (it never waits for a connect).
 *
 * Locks: mu protects fail_seq, last_fail, the waiters list and a
 * waiter's `ready` flag. It is never held while a core call or a libpq call runs, except
 * that the ticket callback takes it (the core runs callbacks with no
 * poolkit lock held). Counters are atomics. */
#include "pg_int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PG_MAGIC 0x706b5047u /* "pkPG" */
#define CONNECT_TIMEOUT_DEFAULT_MS 10000
#define RESET_TIMEOUT_DEFAULT_MS 5000
#define STATEMENT_CACHE_DEFAULT 64
#define STATEMENT_CACHE_MAX 4096

/* A thread waiting on a ticket. It sleeps on its own condition variable:
 * a hand-off wakes only the thread it serves, and a failed connect wakes
 * every waiter (note_failure walks pg->waiters). */
struct pk__pg_waiter {
    struct pk_pg_pool *pg;
    pthread_cond_t cv;
    int ready;                  /* pg->mu */
    struct pk__pg_waiter *prev, *next; /* pg->waiters, pg->mu */
};

int
pk__pg_valid(const pk_pg_pool *pool)
{
    return pool && pool->magic == PG_MAGIC;
}

/* ---- counters --------------------------------------------------------------- */

#define COUNT(pg, field) \
    atomic_fetch_add_explicit(&(pg)->n.field, 1, memory_order_relaxed)

/* ---- connect ------------------------------------------------------------------ */

static void
note_failure(struct pk_pg_pool *pg, const pk_error *e)
{
    COUNT(pg, connects_failed);
    pthread_mutex_lock(&pg->mu);
    pg->fail_seq++;
    pg->last_fail = *e;
    for (struct pk__pg_waiter *w = pg->waiters; w; w = w->next)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&pg->mu);
}

/* Drives PQconnectPoll to the end or to the deadline. Returns 0 or a
 * PK_ECONNECT filled into e. */
static int
connect_poll(PGconn *c, uint64_t deadline, int timeout_ms, pk_error *e)
{
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;

    for (;;) {
        if (st == PGRES_POLLING_OK)
            return 0;
        if (st == PGRES_POLLING_FAILED)
            return pk__pg_set_error(e, PK_ECONNECT, CONNECTION_BAD, "",
                                    PQerrorMessage(c));
        int fd = PQsocket(c);
        if (fd >= 0) {
            int r = pk_wait_fd(
                fd, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
            if (r == 0)
                return pk_error_set(e, PK_ECONNECT, CONNECTION_BAD,
                                    "connect to %s:%s timed out after %d ms "
                                    "(connect_timeout_ms)",
                                    PQhost(c) ? PQhost(c) : "?",
                                    PQport(c) ? PQport(c) : "?", timeout_ms);
            if (r < 0)
                return pk_error_set(e, PK_ECONNECT, -r, "poll: %s",
                                    strerror(-r));
        }
        st = PQconnectPoll(c);
    }
}

/* The full reset, ending in a query for the prepared statements that are
 * not the statement cache's (pk_s...) nor in `keep` (the names init
 * made, as a quoted SQL array, or NULL). Usually none: a second round
 * trip deallocates them when there are (deallocate_others). Several
 * statements in one simple query run as one implicit transaction; DISCARD
 * ALL cannot, hence the list. A DO block could deallocate in the same
 * round trip, but compiling it costs more than the round trip saves. */
static const char full_reset_head[] =
    "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *; "
    "SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD PLANS; "
    "DISCARD SEQUENCES; SELECT name FROM pg_prepared_statements WHERE "
    "name NOT LIKE '" PK__PG_STMT_PREFIX "%'";

static char *
full_reset_sql(const char *keep)
{
    size_t n = sizeof full_reset_head + (keep ? strlen(keep) + 32 : 0);
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s%s%s", full_reset_head,
                 keep ? " AND name <> ALL (" : "", keep ? keep : "",
                 keep ? ")" : "");
    return s;
}

/* After init ran: the full reset for this connection keeps the
 * statements it prepared. Reads their names back (one round trip, at
 * connect only). */
static int
keep_init_statements(struct pk__pg_conn *pc, uint64_t deadline, pk_error *e)
{
    PGresult *r = NULL;
    int rc = pk__pg_run(pc->conn,
                        "SELECT string_agg(quote_literal(name), ',') FROM "
                        "pg_prepared_statements",
                        deadline, &r, e);
    if (rc == 0 && r && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
        const char *names = PQgetvalue(r, 0, 0);
        size_t n = strlen(names) + 16;
        char *keep = malloc(n);
        if (keep) {
            snprintf(keep, n, "ARRAY[%s]", names);
            pc->reset_sql = full_reset_sql(keep);
            free(keep);
        }
        if (!pc->reset_sql)
            rc = pk_error_set(e, PK_ENOMEM, ENOMEM, "init: out of memory");
    } else if (rc) {
        rc = pk_error_set(e, rc, e->sys, "init: %s", e->msg);
    }
    PQclear(r);
    return rc;
}

static int
run_init(struct pk_pg_pool *pg, struct pk__pg_conn *pc, uint64_t deadline,
         pk_error *e)
{
    if (pg->init_sql) {
        int rc = pk__pg_run(pc->conn, pg->init_sql, deadline, NULL, e);
        if (rc)
            return pk_error_set(e, rc, e->sys, "init_sql: %s", e->msg);
    }
    if (pg->init) {
        int rc = pg->init(pc->conn, &pc->ctx, pg->init_user, e);
        if (rc) {
            if (e->code == 0)
                pk_error_set(e, rc, 0, "init hook failed: %s",
                             pk_strerror(rc));
            return rc;
        }
    }
    if (pg->reset == PK_PG_RESET_FULL && (pg->init_sql || pg->init))
        return keep_init_statements(pc, deadline, e);
    return 0;
}

static void
finish(struct pk_pg_pool *pg, struct pk__pg_conn *pc)
{
    if (pg->fini)
        pg->fini(pc->conn, pc->ctx, pg->init_user);
    PQfinish(pc->conn);
    pk__pg_conn_free(pc);
}

/* libpq prints notices, and a FATAL that arrives while the connection is
 * idle (a shutdown, idle_session_timeout), to stderr by default: in a
 * pool those are the pool's business (the check reads them), not the
 * program's output. init may install a processor of its own. */
static void
drop_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int
pg_create(void *user, void **res, pk_error *err)
{
    struct pk_pg_pool *pg = user;
    const char *const keys[] = { "dbname", NULL };
    const char *const vals[] = { pg->conninfo, NULL };
    pk_error e = { 0, 0, "" };
    uint64_t t0 = pk_clock_ns();
    uint64_t deadline = pk_deadline_after(pg->connect_timeout_ms);
    struct pk__pg_conn *pc = NULL;
    int rc;

    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "libpq: out of memory");
    if (PQstatus(c) == CONNECTION_BAD)
        rc = pk__pg_set_error(&e, PK_ECONNECT, CONNECTION_BAD, "",
                              PQerrorMessage(c));
    else
        rc = connect_poll(c, deadline, pg->connect_timeout_ms, &e);
    if (rc == 0) {
        PQsetNoticeProcessor(c, drop_notice, NULL);
        pc = pk__pg_conn_new(pg, c, pg->statement_cache);
        rc = pc ? run_init(pg, pc, deadline, &e)
                : pk_error_set(&e, PK_ENOMEM, ENOMEM, "out of memory");
    }
    if (rc) {
        if (pc)
            finish(pg, pc);
        else
            PQfinish(c);
        note_failure(pg, &e);
        if (err)
            *err = e;
        return rc;
    }
    COUNT(pg, connects_ok);
    pk_hist_add(pg->connect_us, (pk_clock_ns() - t0) / 1000);
    *res = pc;
    return 0;
}

/* ---- closing a connection ------------------------------------------------------ */

/* A connection closed while its query still runs: PQfinish alone leaves
 * the query running on the server until it next writes to the socket.
 * PQcancel blocks (libpq 15 has no non-blocking cancel), so a thread of
 * its own cancels, then closes. */
static void *
cancel_main(void *arg)
{
    PGconn *c = arg;
    char ebuf[256];
    PGcancel *cn = PQgetCancel(c);
    if (cn) {
        (void)PQcancel(cn, ebuf, sizeof ebuf);
        PQfreeCancel(cn);
    }
    PQfinish(c);
    return NULL;
}

static int
busy(PGconn *c)
{
    return PQstatus(c) == CONNECTION_OK &&
           (PQtransactionStatus(c) == PQTRANS_ACTIVE || PQisBusy(c));
}

static void
pg_destroy(void *user, void *res)
{
    struct pk_pg_pool *pg = user;
    struct pk__pg_conn *pc = res;

    if (busy(pc->conn)) {
        COUNT(pg, queries_cancelled);
        if (pg->fini)
            pg->fini(pc->conn, pc->ctx, pg->init_user);
        PGconn *c = pc->conn;
        pk__pg_conn_free(pc);
        pthread_t t;
        pthread_attr_t a;
        int ok = pthread_attr_init(&a) == 0;
        if (ok) {
            pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
            ok = pthread_create(&t, &a, cancel_main, c) == 0;
            pthread_attr_destroy(&a);
        }
        if (!ok)
            cancel_main(c);
        return;
    }
    finish(pg, pc);
}

/* Async-signal-safe: PQsocket reads a field, close is safe. The PGconn
 * and the record are leaked on purpose (PQfinish would send Terminate). */
static void
pg_forget_in_child(void *user, void *res)
{
    struct pk__pg_conn *pc = res;
    (void)user;
    int fd = PQsocket(pc->conn);
    if (fd >= 0)
        close(fd);
}

/* ---- check and reset ------------------------------------------------------------- */

/* No round trip: a connection idle in the pool should have nothing to
 * read. If the socket is readable, read what is there (the FATAL of a
 * shutdown, an EOF, a notification); a few rounds let the EOF that
 * follows a FATAL be seen. */
static int
check_socket(PGconn *c, pk_error *err)
{
    for (int round = 0; round < 4; round++) {
        if (PQstatus(c) != CONNECTION_OK)
            break;
        struct pollfd p = { .fd = PQsocket(c), .events = POLLIN,
                            .revents = 0 };
        int n = poll(&p, 1, 0);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return pk_error_set(err, PK_ECHECK, errno, "poll: %s",
                                strerror(errno));
        }
        if (p.revents & POLLNVAL)
            return pk_error_set(err, PK_ECHECK, CONNECTION_BAD,
                                "connection socket is closed");
        if (!PQconsumeInput(c))
            break;
        PGnotify *nt;
        while ((nt = PQnotifies(c)) != NULL)
            PQfreemem(nt); /* not the next borrower's */
    }
    if (PQstatus(c) == CONNECTION_OK)
        return 0;
    return pk__pg_set_error(err, PK_ECHECK, PQstatus(c), "connection lost: ",
                            PQerrorMessage(c));
}

static int
pg_check(void *user, void *res, pk_error *err)
{
    struct pk_pg_pool *pg = user;
    struct pk__pg_conn *pc = res;
    pk_error e = { 0, 0, "" };

    int rc = pc->doomed ? pk_error_set(&e, PK_ECHECK, 0, "connection-class "
                                       "error seen")
                        : check_socket(pc->conn, &e);
    if (rc == 0 && pg->check_query &&
        pk__pg_run(pc->conn, "", pk_deadline_after(pg->reset_timeout_ms),
                   NULL, &e) != 0)
        rc = pk_error_set(&e, PK_ECHECK, e.sys, "empty query: %s", e.msg);
    if (rc) {
        COUNT(pg, checks_failed);
        if (err)
            *err = e;
    }
    return rc;
}

/* DEALLOCATE each statement the full reset's query named (the
 * borrower's), in one round trip. */
static int
deallocate_others(PGconn *c, const PGresult *names, uint64_t deadline)
{
    size_t cap = 1, len = 0;
    int n = PQntuples(names), rc = -1;
    for (int i = 0; i < n; i++)
        cap += (size_t)PQgetlength(names, i, 0) * 2 + 16;
    char *sql = malloc(cap);
    if (!sql)
        return -1;
    sql[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *v = PQgetvalue(names, i, 0);
        char *id = PQescapeIdentifier(c, v, strlen(v));
        if (!id)
            goto out;
        len += (size_t)snprintf(sql + len, cap - len, "DEALLOCATE %s; ", id);
        PQfreemem(id);
    }
    rc = pk__pg_run(c, sql, deadline, NULL, NULL);
out:
    free(sql);
    return rc;
}

static int
reset_statements(struct pk_pg_pool *pg, struct pk__pg_conn *pc,
                 uint64_t deadline)
{
    PGconn *c = pc->conn;
    char *stale = pk__pg_stmt_take_stale(pc);
    int rc = 0;

    if (stale) {
        rc = pk__pg_run(c, stale, deadline, NULL, NULL);
        free(stale);
    }
    if (rc == 0 && pg->reset == PK_PG_RESET_FULL) {
        COUNT(pg, resets_full);
        PGresult *others = NULL;
        rc = pk__pg_run(c, pc->reset_sql ? pc->reset_sql : pg->reset_sql,
                        deadline, &others, NULL);
        if (rc == 0 && PQntuples(others) > 0)
            rc = deallocate_others(c, others, deadline);
        PQclear(others);
    } else if (rc == 0 && pg->reset == PK_PG_RESET_CUSTOM) {
        COUNT(pg, resets_custom);
        rc = pk__pg_run(c, pg->reset_sql, deadline, NULL, NULL);
        pk__pg_stmt_forget_all(pc);
    }
    return rc;
}

static int
pg_reset(void *user, void *res)
{
    struct pk_pg_pool *pg = user;
    struct pk__pg_conn *pc = res;
    PGconn *c = pc->conn;

    /* ACTIVE: a query still runs or its results are unread; the caller
     * gave up on it. The destroy hook cancels it. */
    PGTransactionStatusType ts = PQtransactionStatus(c);
    if (pc->doomed || PQstatus(c) != CONNECTION_OK ||
        PQpipelineStatus(c) != PQ_PIPELINE_OFF || ts == PQTRANS_ACTIVE ||
        ts == PQTRANS_UNKNOWN || PQisBusy(c) ||
        (PQisnonblocking(c) && PQsetnonblocking(c, 0) != 0))
        goto fail;
    /* The common rollback-mode release sends nothing: no clock read. */
    if (ts == PQTRANS_IDLE && pg->reset == PK_PG_RESET_ROLLBACK &&
        !pk__pg_stmt_has_stale(pc))
        return 0;
    uint64_t deadline = pk_deadline_after(pg->reset_timeout_ms);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        COUNT(pg, resets_rollback);
        if (pk__pg_run(c, "ROLLBACK", deadline, NULL, NULL) != 0)
            goto fail;
    }
    if (reset_statements(pg, pc, deadline) != 0 ||
        PQtransactionStatus(c) != PQTRANS_IDLE)
        goto fail;
    return 0;
fail:
    COUNT(pg, resets_failed);
    return -1;
}

/* ---- events ----------------------------------------------------------------- */

static void
pg_event(void *user, const pk_event *ev)
{
    struct pk_pg_pool *pg = user;
    if (ev->kind == PK_EVENT_HELD_TOO_LONG)
        COUNT(pg, leaks_suspected);
    if (pg->event)
        pg->event(pg->event_user, ev);
}

/* ---- create and destroy ------------------------------------------------------ */

static void
pg_free(struct pk_pg_pool *pg)
{
    pg->magic = 0;
    pthread_condattr_destroy(&pg->cv_attr);
    pthread_mutex_destroy(&pg->mu);
    pk_hist_destroy(pg->connect_us);
    free(pg->conninfo);
    free(pg->init_sql);
    free(pg->reset_sql);
    free(pg);
}

static void
pg_user_free(void *user)
{
    pg_free(user);
}

static int
check_options(const pk_pg_options *o, pk_error *err)
{
    char *msg = NULL;

    if (!o->conninfo)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_options: conninfo "
                            "is NULL");
    PQconninfoOption *opts = PQconninfoParse(o->conninfo, &msg);
    if (!opts) {
        int rc = pk__pg_set_error(err, PK_EINVAL, 0,
                                  "pk_pg_options: conninfo: ",
                                  msg ? msg : "out of memory");
        PQfreemem(msg);
        return rc;
    }
    PQconninfoFree(opts);
    if (o->connect_timeout_ms < 0 && o->connect_timeout_ms != PK_NEVER)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_options: "
                            "connect_timeout_ms (%d) must be 0, positive or "
                            "PK_NEVER", o->connect_timeout_ms);
    if (o->reset_timeout_ms < 0)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_options: "
                            "reset_timeout_ms (%d) must be 0 or positive",
                            o->reset_timeout_ms);
    if (o->reset != PK_PG_RESET_FULL && o->reset != PK_PG_RESET_ROLLBACK &&
        o->reset != PK_PG_RESET_CUSTOM)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_options: reset (%d) "
                            "is not a pk_pg_reset", o->reset);
    if ((o->reset == PK_PG_RESET_CUSTOM) != (o->reset_sql != NULL))
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_options: reset_sql "
                            "goes with PK_PG_RESET_CUSTOM, and only with it");
    if (o->statement_cache < -1 || o->statement_cache > STATEMENT_CACHE_MAX)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_options: "
                            "statement_cache (%d) must be -1 (off), 0 (the "
                            "default) or up to %d", o->statement_cache,
                            STATEMENT_CACHE_MAX);
    return 0;
}

static int
copy_text(char **dst, const char *src)
{
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

static void
apply_options(struct pk_pg_pool *pg, const pk_pg_options *o)
{
    pg->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms
                                                   : CONNECT_TIMEOUT_DEFAULT_MS;
    pg->reset_timeout_ms = o->reset_timeout_ms ? o->reset_timeout_ms
                                               : RESET_TIMEOUT_DEFAULT_MS;
    pg->reset = o->reset;
    pg->init = o->init;
    pg->fini = o->fini;
    pg->init_user = o->init_user;
    pg->event = o->event;
    pg->event_user = o->event_user;
    pg->check_query = o->check_query != 0;
    pg->require_writable = o->require_writable != 0;
    pg->pgbouncer = o->pgbouncer_transaction_mode != 0;
    pg->statement_cache = o->statement_cache == 0 ? STATEMENT_CACHE_DEFAULT
                          : o->statement_cache < 0 ? 0
                                                   : o->statement_cache;
    if (pg->pgbouncer) {
        /* A server session is not this connection's between
         * transactions: no statement survives, no session reset means
         * anything. */
        pg->statement_cache = 0;
        if (pg->reset == PK_PG_RESET_FULL)
            pg->reset = PK_PG_RESET_ROLLBACK;
    }
}

static struct pk_pg_pool *
pg_new(const pk_pg_options *o)
{
    struct pk_pg_pool *pg = calloc(1, sizeof *pg);

    if (!pg)
        return NULL;
    if (copy_text(&pg->conninfo, o->conninfo) ||
        copy_text(&pg->init_sql, o->init_sql) ||
        copy_text(&pg->reset_sql, o->reset_sql) ||
        (o->reset == PK_PG_RESET_FULL && !(pg->reset_sql = full_reset_sql(NULL))))
        goto fail;
    if (pk_hist_create(&pg->connect_us) != 0 ||
        pthread_condattr_init(&pg->cv_attr) != 0)
        goto fail;
    pthread_condattr_setclock(&pg->cv_attr, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&pg->mu, NULL) != 0) {
        pthread_condattr_destroy(&pg->cv_attr);
        goto fail;
    }
    apply_options(pg, o);
    return pg;
fail:
    pk_hist_destroy(pg->connect_us);
    free(pg->conninfo);
    free(pg->init_sql);
    free(pg->reset_sql);
    free(pg);
    return NULL;
}

int
pk_pg_pool_create(pk_pg_pool **out, const pk_pg_options *o, pk_error *err)
{
    if (!out || !o)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_pool_create: %s is "
                            "NULL", !out ? "out" : "options");
    int rc = check_options(o, err);
    if (rc)
        return rc;
    pk_pool_options po = {
        .create = pg_create, .destroy = pg_destroy, .check = pg_check,
        .reset = pg_reset, .forget_in_child = pg_forget_in_child,
        .user_free = pg_user_free, .event = pg_event,
        .min_size = o->min_size, .max_size = o->max_size,
        .max_creating = o->max_creating,
        .check_after_ms = o->check_after_ms,
        .idle_timeout_ms = o->idle_timeout_ms,
        .max_lifetime_ms = o->max_lifetime_ms,
        .held_too_long_ms = o->held_too_long_ms,
    };
    rc = pk_pool_options_check(&po, err);
    if (rc)
        return rc;
    struct pk_pg_pool *pg = pg_new(o);
    if (!pg)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "pk_pg_pool_create: "
                            "out of memory");
    po.user = pg;
    po.event_user = pg;
    pg->magic = PG_MAGIC;
    rc = pk_pool_create(&pg->core, &po);
    if (rc) {
        pg_free(pg); /* the core calls user_free only once it existed */
        return pk_error_set(err, rc, 0, "pk_pg_pool_create: the core pool "
                            "could not be made: %s", pk_strerror(rc));
    }
    *out = pg;
    return 0;
}

/* ---- acquire and release ----------------------------------------------- */

static void
on_ready(void *arg, pk_pool_ticket *t)
{
    struct pk__pg_waiter *w = arg;
    (void)t;
    pthread_mutex_lock(&w->pg->mu);
    w->ready = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->pg->mu);
}

static void
waiter_link_locked(struct pk_pg_pool *pg, struct pk__pg_waiter *w)
{
    w->prev = NULL;
    w->next = pg->waiters;
    if (pg->waiters)
        pg->waiters->prev = w;
    pg->waiters = w;
}

static void
waiter_unlink_locked(struct pk_pg_pool *pg, struct pk__pg_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        pg->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
}

/* Waits for the ticket, a connect failure after seq, or the deadline
 * (the ticket's own timeout normally comes first: the core then makes it
 * ready). Returns 1 if a connect failed, copying it into *fail. */
static int
wait_ticket(struct pk_pg_pool *pg, struct pk__pg_waiter *w, uint64_t seq,
            uint64_t deadline, pk_error *fail)
{
    int failed = 0;

    pthread_mutex_lock(&pg->mu);
    while (!w->ready && pg->fail_seq == seq) {
        if (deadline == PK_NO_DEADLINE) {
            pthread_cond_wait(&w->cv, &pg->mu);
            continue;
        }
        struct timespec ts = { .tv_sec = (time_t)(deadline / 1000000000u),
                               .tv_nsec = (long)(deadline % 1000000000u) };
        if (pthread_cond_timedwait(&w->cv, &pg->mu, &ts) == ETIMEDOUT)
            break;
    }
    if (!w->ready && pg->fail_seq != seq) {
        failed = 1;
        *fail = pg->last_fail;
    }
    pthread_mutex_unlock(&pg->mu);
    return failed;
}

static int
acquire_ticket(struct pk_pg_pool *pg, pk_lease *lease, int timeout_ms,
               pk_error *err, const char *file, int line)
{
    struct pk__pg_waiter w = { .pg = pg };
    pk_pool_ticket *t = NULL;
    pk_error fail = { 0, 0, "" };
    int ready = 0;

    if (pthread_cond_init(&w.cv, &pg->cv_attr) != 0)
        return pk_error_set(err, PK_ENOMEM, 0, "pk_pg_acquire: no condition "
                            "variable");
    pthread_mutex_lock(&pg->mu);
    uint64_t seq = pg->fail_seq;
    waiter_link_locked(pg, &w);
    pthread_mutex_unlock(&pg->mu);
    int rc = pk_pool_acquire_async_at(pg->core, &t, timeout_ms, on_ready, &w,
                                      &ready, file, line);
    int failed = 0;
    if (rc == 0 && !ready) {
        /* A second past the ticket's own timeout: only a safety net. */
        uint64_t deadline =
            timeout_ms == PK_WAIT_FOREVER
                ? PK_NO_DEADLINE
                : pk_deadline_after(timeout_ms) + 1000000000u;
        failed = wait_ticket(pg, &w, seq, deadline, &fail);
    }
    if (rc == 0) {
        rc = pk_pool_ticket_take(t, lease, err);
        if (rc == PK_EAGAIN) {
            pk_pool_ticket_free(t);
            rc = failed ? fail.code
                        : pk_error_set(err, PK_ETIMEDOUT, 0, "pk_pg_acquire: "
                                       "timed out after %d ms", timeout_ms);
            if (failed && err)
                *err = fail;
        }
    } else {
        pk_error_set(err, rc, 0, "pk_pg_acquire: %s", pk_strerror(rc));
    }
    /* The callback never runs after take or free returned (pool.h). */
    pthread_mutex_lock(&pg->mu);
    waiter_unlink_locked(pg, &w);
    pthread_mutex_unlock(&pg->mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

static void
lease_fill(pk_pg_lease *lease)
{
    struct pk__pg_conn *pc = lease->lease_.resource;
    lease->conn = pc->conn;
    lease->ctx = pc->ctx;
}

int
pk_pg_acquire_at(pk_pg_pool *pool, pk_pg_lease *lease, int timeout_ms,
                 pk_error *err, const char *file, int line)
{
    if (!pk__pg_valid(pool) || !lease || !file ||
        (timeout_ms < 0 && timeout_ms != PK_WAIT_FOREVER))
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_acquire: %s",
                            !pk__pg_valid(pool) ? "not a pk_pg_pool"
                            : !lease || !file   ? "NULL argument"
                                                : "bad timeout");
    memset(lease, 0, sizeof *lease);
    /* An idle connection first, with no ticket: while anyone waits, a
     * released connection goes to the longest waiter, never to idle, so
     * this does not jump the queue. */
    int rc = pk_pool_acquire_at(pool->core, &lease->lease_, 0,
                                timeout_ms == 0 ? err : NULL, file, line);
    if (rc == PK_EAGAIN && timeout_ms != 0)
        rc = acquire_ticket(pool, &lease->lease_, timeout_ms, err, file,
                            line);
    if (rc == 0)
        lease_fill(lease);
    return rc;
}

int
pk_pg_acquire_async_at(pk_pg_pool *pool, pk_pool_ticket **ticket,
                       int timeout_ms, pk_ticket_fn cb, void *arg, int *ready,
                       const char *file, int line)
{
    if (!pk__pg_valid(pool))
        return PK_EINVAL;
    return pk_pool_acquire_async_at(pool->core, ticket, timeout_ms, cb, arg,
                                    ready, file, line);
}

int
pk_pg_ticket_take(pk_pg_pool *pool, pk_pool_ticket *ticket,
                  pk_pg_lease *lease, pk_error *err)
{
    if (!pk__pg_valid(pool) || !ticket || !lease)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_ticket_take: %s",
                            !pk__pg_valid(pool) ? "not a pk_pg_pool"
                                                : "NULL argument");
    memset(lease, 0, sizeof *lease);
    int rc = pk_pool_ticket_take(ticket, &lease->lease_, err);
    if (rc == 0)
        lease_fill(lease);
    return rc;
}

static int
lease_held(const pk_pg_lease *lease)
{
    const struct pk__pg_conn *pc = lease ? lease->lease_.resource : NULL;
    return pc && lease->conn && lease->conn == pc->conn;
}

int
pk_pg_release(pk_pg_pool *pool, pk_pg_lease *lease, int status)
{
    if (!pk__pg_valid(pool) || !lease_held(lease))
        return PK_EINVAL;
    struct pk__pg_conn *pc = lease->lease_.resource;
    if (status == PK_RELEASE_OK &&
        (pc->doomed || PQstatus(pc->conn) != CONNECTION_OK))
        status = PK_RELEASE_BROKEN;
    int rc = pk_pool_release(pool->core, &lease->lease_, status);
    if (rc == 0) {
        if (status == PK_RELEASE_DETACH)
            pk__pg_conn_free(pc); /* the PGconn and ctx are the caller's */
        lease->conn = NULL;
        lease->ctx = NULL;
    }
    return rc;
}

/* Connection-class: the session is gone or cannot be trusted. */
static int
conn_class(const struct pk_pg_pool *pg, const char *st)
{
    if (!st)
        return 0;
    return strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0 ||
           strcmp(st, "57P02") == 0 || strcmp(st, "57P03") == 0 ||
           (pg->require_writable && strcmp(st, "25006") == 0);
}

int
pk__pg_status_after(pk_pg_pool *pool, struct pk__pg_conn *pc,
                    const PGresult *last)
{
    if (PQstatus(pc->conn) != CONNECTION_OK ||
        (last && conn_class(pool, PQresultErrorField(last, PG_DIAG_SQLSTATE))))
        pc->doomed = 1;
    return pc->doomed ? PK_RELEASE_BROKEN : PK_RELEASE_OK;
}

int
pk_pg_release_result(pk_pg_pool *pool, pk_pg_lease *lease,
                     const struct pg_result *last)
{
    if (!pk__pg_valid(pool) || !lease_held(lease))
        return PK_EINVAL;
    return pk_pg_release(pool, lease,
                         pk__pg_status_after(pool, lease->lease_.resource,
                                             last));
}

/* ---- the rest ------------------------------------------------------------------- */

int
pk_pg_stats_get(pk_pg_pool *pool, pk_pg_stats *out)
{
    if (!pk__pg_valid(pool) || !out)
        return PK_EINVAL;
    memset(out, 0, sizeof *out);
    int rc = pk_pool_stats_get(pool->core, &out->core);
    if (rc)
        return rc;
#define READ(field) \
    out->field = atomic_load_explicit(&pool->n.field, memory_order_relaxed)
    READ(connects_ok);
    READ(connects_failed);
    READ(checks_failed);
    READ(resets_rollback);
    READ(resets_full);
    READ(resets_custom);
    READ(resets_failed);
    READ(queries_cancelled);
    READ(leaks_suspected);
    READ(statements_prepared);
#undef READ
    out->connect_p50_us = pk_hist_quantile(pool->connect_us, 0.50);
    out->connect_p99_us = pk_hist_quantile(pool->connect_us, 0.99);
    return 0;
}

pk_pool *
pk_pg_pool_core(pk_pg_pool *pool)
{
    return pk__pg_valid(pool) ? pool->core : NULL;
}

int
pk_pg_pool_close(pk_pg_pool *pool, int timeout_ms)
{
    if (!pk__pg_valid(pool))
        return PK_EINVAL;
    return pk_pool_close(pool->core, timeout_ms);
}

void
pk_pg_pool_destroy(pk_pg_pool *pool)
{
    if (!pk__pg_valid(pool))
        return;
    /* The handle itself is freed by pg_user_free, after the last
     * connection is destroyed (maybe inside this call). */
    pk_pool_destroy(pool->core);
}
