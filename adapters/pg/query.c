/* adapters/pg/query.c - statements on a lease or on the pool, and
 * transactions with retry (pg.h: pk_pg_query, pk_pg_exec,
 * pk_pg_transaction).
 *
 * A statement goes out through the extended protocol, by the name the
 * statement cache gave it when it has one (conn.c), and its results are
 * read with poll() on the socket until the caller's deadline. Past the
 * deadline the query is cancelled on the server and its results drained,
 * so the connection is idle again before anyone sees it. */
#include "pg_int.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* After a cancel, how long to wait for the connection to come back idle
 * before marking it to be closed instead. */
#define DRAIN_MS 500
#define TXN_ATTEMPTS_DEFAULT 5
#define TXN_BACKOFF_CAP_MS 100

/* ---- errors ------------------------------------------------------------------ */

static const char *
sqlstate_of(const PGresult *r)
{
    return r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
}

/* Fills err from a failed result (or from the connection when r is
 * NULL): PK_EADAPTER, sys = the packed SQLSTATE, msg = the primary
 * message on one line. A lost connection that carries no SQLSTATE gets
 * 08006 (connection_failure). */
static int
set_result_error(pk_error *err, PGconn *c, const PGresult *r)
{
    const char *st = sqlstate_of(r);
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)
                        : NULL;
    if (!msg && r)
        msg = PQresultErrorMessage(r);
    if (!msg || !*msg)
        msg = PQerrorMessage(c);
    if (!st && PQstatus(c) != CONNECTION_OK)
        st = "08006";
    return pk__pg_set_error(err, PK_EADAPTER, pk__pg_pack_sqlstate(st), "",
                            msg);
}

/* The deadline passed with the query running: cancel it on the server
 * (PQcancel opens a new connection and waits for it: blocking, briefly),
 * then drain its results within DRAIN_MS, or mark the connection to be
 * closed. */
static int
cancel_query(pk_pg_pool *pool, struct pk__pg_conn *pc, int timeout_ms,
             pk_error *err)
{
    char ebuf[256];
    int cancelled = 0;
    PGcancel *cn = PQgetCancel(pc->conn);
    if (cn) {
        cancelled = PQcancel(cn, ebuf, sizeof ebuf);
        PQfreeCancel(cn);
    }
    atomic_fetch_add_explicit(&pool->n.queries_cancelled, 1,
                              memory_order_relaxed);
    if (!cancelled ||
        pk__pg_read(pc->conn, pk_deadline_after(DRAIN_MS), NULL) != 1 ||
        PQstatus(pc->conn) != CONNECTION_OK)
        pc->doomed = 1;
    return pk_error_set(err, PK_ETIMEDOUT, 0, "timed out after %d ms; the "
                        "query was cancelled%s", timeout_ms,
                        pc->doomed ? " and its connection will be closed"
                                   : "");
}

/* ---- one statement, through the cache --------------------------------------------- */

/* The cache slot for sql, marked used; a new one when it is not there
 * (after deallocating the statement it evicts). NULL: run it unnamed. */
static struct pk__pg_stmt *
cache_slot(struct pk__pg_conn *pc, const char *sql, int in_failed,
           uint64_t deadline, int *broke)
{
    struct pk__pg_stmt *s = pk__pg_stmt_find(pc, sql);
    if (s) {
        pk__pg_stmt_touch(pc, s);
        return s;
    }
    if (in_failed)
        return NULL; /* nothing could be deallocated now */
    int evicted;
    unsigned old;
    s = pk__pg_stmt_add(pc, sql, &evicted, &old);
    if (evicted) {
        char dealloc[32];
        snprintf(dealloc, sizeof dealloc,
                 "DEALLOCATE " PK__PG_STMT_PREFIX "%u", old);
        if (pk__pg_run(pc->conn, dealloc, deadline, NULL, NULL) != 0)
            *broke = 1;
    }
    return s;
}

/* Prepares s on its second use (one more round trip, once). A statement
 * that will not prepare stays SEEN and runs unnamed. Returns -1 if the
 * connection failed or the deadline passed. */
static int
prepare(pk_pg_pool *pool, struct pk__pg_conn *pc, struct pk__pg_stmt *s,
        int nparams, uint64_t deadline)
{
    PGconn *c = pc->conn;
    char name[32];
    unsigned id = ++pc->next_id;
    PGresult *r = NULL;

    snprintf(name, sizeof name, PK__PG_STMT_PREFIX "%u", id);
    if (!PQsendPrepare(c, name, s->sql, nparams, NULL))
        return -1;
    int done = pk__pg_read(c, deadline, &r);
    if (done == 1 && !pk__pg_failed(r)) {
        s->state = PK__PG_STMT_READY;
        s->id = id;
        atomic_fetch_add_explicit(&pool->n.statements_prepared, 1,
                                  memory_order_relaxed);
    }
    PQclear(r);
    return done == 1 ? 0 : -1;
}

/* Sends the statement: by name when cached, preparing it on its second
 * use; else unnamed. Returns 0 or -1 (PQerrorMessage says why, or the
 * connection is busy past the deadline). */
static int
send_statement(pk_pg_pool *pool, struct pk__pg_conn *pc, const char *sql,
               int nparams, const char *const *params, uint64_t deadline)
{
    PGconn *c = pc->conn;
    int in_failed = PQtransactionStatus(c) == PQTRANS_INERROR;
    int broke = 0;
    struct pk__pg_stmt *s =
        pc->ncache ? cache_slot(pc, sql, in_failed, deadline, &broke) : NULL;

    if (broke)
        return -1;
    if (s && s->state == PK__PG_STMT_SEEN && s->uses >= 2 && !in_failed &&
        prepare(pool, pc, s, nparams, deadline) != 0)
        return -1;
    if (s && s->state == PK__PG_STMT_READY) {
        char name[32];
        snprintf(name, sizeof name, PK__PG_STMT_PREFIX "%u", s->id);
        return PQsendQueryPrepared(c, name, nparams, params, NULL, NULL, 0)
                   ? 0
                   : -1;
    }
    return PQsendQueryParams(c, sql, nparams, NULL, params, NULL, NULL, 0)
               ? 0
               : -1;
}

/* The server rejected a cached statement: its plan is invalid after a
 * schema change (0A000, "cached plan must not change result type"), or
 * someone deallocated it (26000). */
static int
cache_rejected(const PGresult *r)
{
    const char *st = sqlstate_of(r);
    return st && (strcmp(st, "26000") == 0 ||
                  (strcmp(st, "0A000") == 0 &&
                   strstr(PQresultErrorMessage(r), "cached plan") != NULL));
}

/* After a rejection: outside a transaction the statement is dropped now
 * (returns 1: run it again); inside one it is marked STALE, to be
 * deallocated once the transaction is over (returns 0). */
static int
drop_rejected(struct pk__pg_conn *pc, const char *sql, uint64_t deadline)
{
    struct pk__pg_stmt *s = pk__pg_stmt_find(pc, sql);
    if (!s || s->state != PK__PG_STMT_READY)
        return 0;
    pk__pg_stmt_mark_stale(pc, s);
    if (PQtransactionStatus(pc->conn) != PQTRANS_IDLE)
        return 0;
    char *stale = pk__pg_stmt_take_stale(pc);
    int ok = stale && pk__pg_run(pc->conn, stale, deadline, NULL, NULL) == 0;
    free(stale);
    return ok;
}

/* Runs one statement and reads its results. Returns 0 with *out, or an
 * error filled into err. */
static int
run_statement(pk_pg_pool *pool, struct pk__pg_conn *pc, const char *sql,
              int nparams, const char *const *params, int timeout_ms,
              uint64_t deadline, PGresult **out, pk_error *err)
{
    PGconn *c = pc->conn;
    for (int attempt = 0;; attempt++) {
        int idle_before = PQtransactionStatus(c) == PQTRANS_IDLE;
        if (send_statement(pool, pc, sql, nparams, params, deadline) != 0) {
            int rc = set_result_error(err, c, NULL);
            pk__pg_status_after(pool, pc, NULL);
            return PQisBusy(c) ? cancel_query(pool, pc, timeout_ms, err) : rc;
        }
        PGresult *res = NULL;
        int done = pk__pg_read(c, deadline, &res);
        if (done == 0) {
            PQclear(res);
            return cancel_query(pool, pc, timeout_ms, err);
        }
        pk__pg_status_after(pool, pc, res);
        if (done == 1 && !pk__pg_failed(res)) {
            *out = res;
            return 0;
        }
        if (done == 1 && attempt == 0 && idle_before && cache_rejected(res) &&
            drop_rejected(pc, sql, deadline)) {
            PQclear(res);
            continue;
        }
        if (done == 1 && cache_rejected(res))
            drop_rejected(pc, sql, deadline);
        int rc = set_result_error(err, c, res);
        PQclear(res);
        return rc;
    }
}

static int
bad_statement_args(const char *sql, int nparams, const char *const *params,
                   int timeout_ms, struct pg_result **out)
{
    return !sql || !out || nparams < 0 || (nparams > 0 && !params) ||
           (timeout_ms <= 0 && timeout_ms != PK_WAIT_FOREVER);
}

static int
query_on(pk_pg_pool *pool, struct pk__pg_conn *pc, const char *sql,
         int nparams, const char *const *params, int timeout_ms,
         uint64_t deadline, PGresult **out, pk_error *err)
{
    PGconn *c = pc->conn;
    if (PQisBusy(c) || PQtransactionStatus(c) == PQTRANS_ACTIVE)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_query: the connection "
                            "is busy with a query of the caller's");
    /* Non-blocking while it runs, so a large send cannot outlast the
     * deadline; blocking again after, as the caller's libpq calls expect. */
    if (PQsetnonblocking(c, 1) != 0) {
        pk__pg_status_after(pool, pc, NULL);
        return set_result_error(err, c, NULL);
    }
    int rc = run_statement(pool, pc, sql, nparams, params, timeout_ms,
                           deadline, out, err);
    (void)PQsetnonblocking(c, 0);
    return rc;
}

int
pk_pg_query(pk_pg_lease *lease, const char *sql, int nparams,
            const char *const *params, int timeout_ms, struct pg_result **out,
            pk_error *err)
{
    if (out)
        *out = NULL;
    struct pk__pg_conn *pc = lease ? lease->lease_.resource : NULL;
    if (!pc || !lease->conn || lease->conn != pc->conn || !pc->pool ||
        bad_statement_args(sql, nparams, params, timeout_ms, out))
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_query: %s",
                            !pc || !lease->conn || lease->conn != pc->conn
                                ? "not a held lease"
                                : "bad argument (NULL sql or out, bad "
                                  "parameters, or a timeout not positive "
                                  "nor PK_WAIT_FOREVER)");
    return query_on(pc->pool, pc, sql, nparams, params, timeout_ms,
                    pk_deadline_after(timeout_ms), out, err);
}

int
pk_pg_exec_at(pk_pg_pool *pool, const char *sql, int nparams,
              const char *const *params, int timeout_ms,
              struct pg_result **out, pk_error *err, const char *file,
              int line)
{
    if (out)
        *out = NULL;
    if (!pk__pg_valid(pool) ||
        bad_statement_args(sql, nparams, params, timeout_ms, out))
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_exec: %s",
                            !pk__pg_valid(pool)
                                ? "not a pk_pg_pool"
                                : "bad argument (NULL sql or out, bad "
                                  "parameters, or a timeout not positive "
                                  "nor PK_WAIT_FOREVER)");
    uint64_t deadline = pk_deadline_after(timeout_ms);
    pk_pg_lease l;
    int rc = pk_pg_acquire_at(pool, &l, timeout_ms, err, file, line);
    if (rc)
        return rc;
    int left = pk_deadline_ms_left(deadline);
    if (left == 0)
        rc = pk_error_set(err, PK_ETIMEDOUT, 0, "pk_pg_exec: timed out "
                          "after %d ms (acquire)", timeout_ms);
    else
        rc = query_on(pool, l.lease_.resource, sql, nparams, params,
                      timeout_ms, deadline, out, err);
    pk_pg_release(pool, &l, PK_RELEASE_OK); /* BROKEN if doomed */
    return rc;
}

/* ---- transactions ------------------------------------------------------------------ */

static int
retryable(const pk_error *e)
{
    char st[6];
    if (e->code != PK_EADAPTER || pk_pg_sqlstate(e->sys, st) != 0)
        return 0;
    /* 0A000 and 26000 only as the statement cache meets them: a plan
     * invalidated by a schema change, or a cached statement deallocated by
     * someone else (the next attempt prepares it again). */
    return strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 ||
           (strcmp(st, "0A000") == 0 && strstr(e->msg, "cached plan")) ||
           (strcmp(st, "26000") == 0 &&
            strstr(e->msg, "\"" PK__PG_STMT_PREFIX));
}

/* Runs a statement of the transaction's own (BEGIN, COMMIT) by the
 * transaction's deadline. */
static int
txn_statement(pk_pg_lease *l, const char *sql, uint64_t deadline,
              pk_error *err)
{
    int left = pk_deadline_ms_left(deadline);
    if (left == 0)
        return pk_error_set(err, PK_ETIMEDOUT, 0, "timed out before %s",
                            sql);
    PGresult *r = NULL;
    int rc = pk_pg_query(l, sql, 0, NULL, left, &r, err);
    PQclear(r);
    return rc;
}

static void
rollback(pk_pg_pool *pool, pk_pg_lease *l, uint64_t deadline)
{
    PGTransactionStatusType ts = PQtransactionStatus(l->conn);
    if (ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR)
        return;
    uint64_t floor = pk_deadline_after(pool->reset_timeout_ms);
    PGresult *r = NULL;
    pk_pg_query(l, "ROLLBACK", 0, NULL,
                pk_deadline_ms_left(deadline > floor ? deadline : floor), &r,
                NULL);
    PQclear(r);
}

/* One attempt: BEGIN, fn, COMMIT (or ROLLBACK). */
static int
txn_attempt(pk_pg_pool *pool, pk_pg_lease *l, const char *begin_sql,
            pk_pg_txn_fn fn, void *arg, uint64_t deadline, pk_error *err)
{
    int rc = txn_statement(l, begin_sql ? begin_sql : "BEGIN", deadline, err);
    if (rc == 0)
        rc = fn(l, arg, err);
    if (rc == 0 && PQtransactionStatus(l->conn) == PQTRANS_INERROR)
        rc = pk_error_set(err, PK_EADAPTER, 0, "the transaction had failed "
                          "(a statement failed and the function went on); "
                          "rolled back");
    if (rc == 0)
        rc = txn_statement(l, "COMMIT", deadline, err);
    if (rc)
        rollback(pool, l, deadline);
    return rc;
}

/* A random pause, growing with the attempt, up to the cap and within the
 * deadline. The seed is the clock: retries only need to spread out. */
static void
backoff(int attempt, uint64_t deadline)
{
    unsigned seed = (unsigned)pk_clock_ns();
    int cap = 1 << (attempt < 7 ? attempt : 7);
    if (cap > TXN_BACKOFF_CAP_MS)
        cap = TXN_BACKOFF_CAP_MS;
    int ms = 1 + (int)(rand_r(&seed) % (unsigned)cap);
    int left = pk_deadline_ms_left(deadline);
    if (left != PK_WAIT_FOREVER && ms > left)
        ms = left;
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

int
pk_pg_transaction_at(pk_pg_pool *pool, const char *begin_sql,
                     int max_attempts, int timeout_ms, pk_pg_txn_fn fn,
                     void *arg, pk_error *err, const char *file, int line)
{
    if (!pk__pg_valid(pool) || !fn || max_attempts < 0 ||
        (timeout_ms <= 0 && timeout_ms != PK_WAIT_FOREVER))
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_transaction: %s",
                            !pk__pg_valid(pool) ? "not a pk_pg_pool"
                            : !fn               ? "fn is NULL"
                                                : "bad max_attempts or "
                                                  "timeout");
    if (max_attempts == 0)
        max_attempts = TXN_ATTEMPTS_DEFAULT;
    uint64_t deadline = pk_deadline_after(timeout_ms);
    pk_error e = { 0, 0, "" }; /* fn's and ours, even when err is NULL */
    pk_pg_lease l;
    int rc = pk_pg_acquire_at(pool, &l, timeout_ms, &e, file, line);
    for (int attempt = 1; l.conn; attempt++) {
        e = (pk_error){ 0, 0, "" };
        rc = txn_attempt(pool, &l, begin_sql, fn, arg, deadline, &e);
        if (rc == 0 || !retryable(&e) || attempt >= max_attempts ||
            pk_deadline_ms_left(deadline) == 0 ||
            ((struct pk__pg_conn *)l.lease_.resource)->doomed) {
            pk_pg_release(pool, &l, PK_RELEASE_OK); /* BROKEN if doomed */
            break;
        }
        backoff(attempt, deadline);
    }
    if (rc && err)
        *err = e;
    return rc;
}
