/* adapters/pg/pg.c - the PostgreSQL pool: libpq connections as pk_pool
 * resources (include/poolkit/pg.h says what each hook does).
 *
 * The core owns the population; this file owns only the hooks and the
 * acquire path. A pk_pg_pool is the hooks' `user`: it lives until the
 * core's user_free, which runs after the last destroy hook, so a lease
 * released after pk_pg_pool_destroy still finds it.
 *
 * Connect. PQconnectStartParams with the caller's conninfo as an
 * expandable dbname (so any conninfo or URI works, several hosts
 * included), then PQconnectPoll driven by poll() on PQsocket (which may
 * change between hosts) until one overall deadline, connect_timeout_ms:
 * PQconnectPoll applies no timeout of its own.
 *
 * Acquire. A blocking acquire that needs a connect would run the create
 * hook on the acquiring thread and retry failed connects until its own
 * deadline (the core's rule). Instead the adapter waits on a core ticket
 * (pk_pool_acquire_async), whose creates run on the core's helper thread,
 * and on the adapter's failure sequence: each failed connect bumps
 * fail_seq under mu and broadcasts cv. A waiter that sees the sequence
 * move while it has not been served withdraws its ticket and returns that
 * failure, so a wrong password reaches the caller after one connect, not
 * after the acquire timeout. A 0-timeout acquire goes straight to the
 * core (it never waits for a connect).
 *
 * Locks: mu protects fail_seq and last_fail, and a waiter's `ready`
 * flag. It is never held while a core call or a libpq call runs, except
 * that the ticket callback takes it (the core runs callbacks with no
 * poolkit lock held). */
#include <poolkit/pg.h>

#include <libpq-fe.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PG_MAGIC 0x706b5047u /* "pkPG" */
#define CONNECT_TIMEOUT_DEFAULT_MS 10000
#define RESET_TIMEOUT_DEFAULT_MS 5000
#define NO_DEADLINE UINT64_MAX
/* After a cancel, how long pk_pg_exec waits for the connection to come
 * back idle before it closes it instead. */
#define EXEC_DRAIN_MS 500

/* PostgreSQL's MAKE_SQLSTATE: 6 bits a character, the first lowest. */
#define PGSIXBIT(ch) (((ch) - '0') & 0x3F)

struct pk_pg_pool {
    unsigned magic;       /* PG_MAGIC from create until user_free */
    pk_pool *core;        /* set once at create */
    char *conninfo;       /* copied at create; read-only after */
    int connect_timeout_ms; /* PK_NEVER: none */
    int reset_timeout_ms;
    int reset;            /* enum pk_pg_reset */
    pthread_mutex_t mu;
    pthread_cond_t cv;    /* CLOCK_MONOTONIC; broadcast on fail_seq and
                             on a ticket ready */
    uint64_t fail_seq;    /* mu: failed connects so far */
    pk_error last_fail;   /* mu: the latest one */
};

/* ---- time and waiting --------------------------------------------------- */

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t
deadline_after(int ms)
{
    if (ms < 0)
        return NO_DEADLINE;
    return now_ns() + (uint64_t)ms * 1000000u;
}

/* Waits until fd is ready for events or the deadline passes.
 * Returns 1 ready (or an error condition on fd, which the next libpq
 * call reports), 0 at the deadline, -1 on a poll error. */
static int
wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        int ms = -1;
        if (deadline != NO_DEADLINE) {
            uint64_t now = now_ns();
            if (now >= deadline)
                return 0;
            uint64_t left = (deadline - now + 999999u) / 1000000u;
            ms = left > INT32_MAX ? INT32_MAX : (int)left;
        }
        struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
        int n = poll(&p, 1, ms);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* libpq's message, on one line: newlines become "; ", trailing white
 * space goes. */
static int
set_pq_error(pk_error *err, int code, int sys, const char *prefix,
             const char *msg)
{
    char buf[PK_ERROR_MSG_SIZE];
    size_t n = 0;

    for (const char *s = msg ? msg : ""; *s && n + 3 < sizeof buf; s++) {
        if (*s != '\n') {
            buf[n++] = *s;
        } else if (s[1] != '\0') {
            buf[n++] = ';';
            buf[n++] = ' ';
        }
    }
    while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t' ||
                     buf[n - 1] == ';'))
        n--;
    buf[n] = '\0';
    return pk_error_set(err, code, sys, "%s%s", prefix, buf);
}

/* ---- hooks ---------------------------------------------------------------- */

static void
note_failure(struct pk_pg_pool *pg, const pk_error *e)
{
    pthread_mutex_lock(&pg->mu);
    pg->fail_seq++;
    pg->last_fail = *e;
    pthread_cond_broadcast(&pg->cv);
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
            return set_pq_error(e, PK_ECONNECT, CONNECTION_BAD, "",
                                PQerrorMessage(c));
        int fd = PQsocket(c);
        if (fd >= 0) {
            int r = wait_fd(fd, st == PGRES_POLLING_READING ? POLLIN : POLLOUT,
                            deadline);
            if (r == 0)
                return pk_error_set(e, PK_ECONNECT, CONNECTION_BAD,
                                    "connect to %s:%s timed out after %d ms "
                                    "(connect_timeout_ms)",
                                    PQhost(c) ? PQhost(c) : "?",
                                    PQport(c) ? PQport(c) : "?", timeout_ms);
            if (r < 0)
                return pk_error_set(e, PK_ECONNECT, errno, "poll: %s",
                                    strerror(errno));
        }
        st = PQconnectPoll(c);
    }
}

static int
pg_create(void *user, void **res, pk_error *err)
{
    struct pk_pg_pool *pg = user;
    const char *const keys[] = { "dbname", NULL };
    const char *const vals[] = { pg->conninfo, NULL };
    pk_error e = { 0, 0, "" };
    int rc;

    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "libpq: out of memory");
    if (PQstatus(c) == CONNECTION_BAD)
        rc = set_pq_error(&e, PK_ECONNECT, CONNECTION_BAD, "",
                          PQerrorMessage(c));
    else
        rc = connect_poll(c, deadline_after(pg->connect_timeout_ms),
                          pg->connect_timeout_ms, &e);
    if (rc) {
        PQfinish(c);
        note_failure(pg, &e);
        if (err)
            *err = e;
        return rc;
    }
    *res = c;
    return 0;
}

static void
pg_destroy(void *user, void *res)
{
    (void)user;
    PQfinish(res);
}

/* No round trip: a connection idle in the pool should have nothing to
 * read. If the socket is readable, read what is there (the FATAL of a
 * shutdown, an EOF, a notification); a few rounds let the EOF that
 * follows a FATAL be seen. */
static int
pg_check(void *user, void *res, pk_error *err)
{
    PGconn *c = res;
    (void)user;

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
    return set_pq_error(err, PK_ECHECK, PQstatus(c), "connection lost: ",
                        PQerrorMessage(c));
}

/* Runs sql and reads every result by the deadline. Returns 0 when every
 * result succeeded. */
static int
exec_until(PGconn *c, const char *sql, uint64_t deadline)
{
    int ok = 1;

    if (!PQsendQuery(c, sql))
        return -1;
    for (;;) {
        while (!PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (!r)
                return ok ? 0 : -1;
            ExecStatusType st = PQresultStatus(r);
            if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
                ok = 0;
            PQclear(r);
        }
        if (wait_fd(PQsocket(c), POLLIN, deadline) <= 0)
            return -1;
        if (!PQconsumeInput(c))
            return -1;
    }
}

/* The statement PK_PG_RESET_FULL runs outside a transaction. */
static const char full_reset_sql[] = "DISCARD ALL";

static int
pg_reset(void *user, void *res)
{
    struct pk_pg_pool *pg = user;
    PGconn *c = res;

    if (PQstatus(c) != CONNECTION_OK || PQpipelineStatus(c) != PQ_PIPELINE_OFF)
        return -1;
    /* ACTIVE: a query still runs or its results are unread; the caller
     * gave up on it. Closing is the only clean way this increment has. */
    PGTransactionStatusType ts = PQtransactionStatus(c);
    if (ts == PQTRANS_ACTIVE || ts == PQTRANS_UNKNOWN || PQisBusy(c))
        return -1;
    if (PQisnonblocking(c) && PQsetnonblocking(c, 0) != 0)
        return -1;
    uint64_t deadline = deadline_after(pg->reset_timeout_ms);
    if ((ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) &&
        exec_until(c, "ROLLBACK", deadline) != 0)
        return -1;
    if (pg->reset == PK_PG_RESET_FULL &&
        exec_until(c, full_reset_sql, deadline) != 0)
        return -1;
    return PQtransactionStatus(c) == PQTRANS_IDLE ? 0 : -1;
}

/* Async-signal-safe: PQsocket reads a field, close is safe. The PGconn
 * is leaked on purpose (PQfinish would send Terminate). */
static void
pg_forget_in_child(void *user, void *res)
{
    (void)user;
    int fd = PQsocket(res);
    if (fd >= 0)
        close(fd);
}

static void
pg_free(struct pk_pg_pool *pg)
{
    pg->magic = 0;
    pthread_cond_destroy(&pg->cv);
    pthread_mutex_destroy(&pg->mu);
    free(pg->conninfo);
    free(pg);
}

static void
pg_user_free(void *user)
{
    pg_free(user);
}

/* ---- create --------------------------------------------------------------- */

static int
check_options(const pk_pg_options *o, pk_error *err)
{
    char *msg = NULL;

    if (!o->conninfo)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_options: conninfo "
                            "is NULL");
    PQconninfoOption *opts = PQconninfoParse(o->conninfo, &msg);
    if (!opts) {
        int rc = set_pq_error(err, PK_EINVAL, 0, "pk_pg_options: conninfo: ",
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
    if (o->reset != PK_PG_RESET_FULL && o->reset != PK_PG_RESET_ROLLBACK)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_options: reset (%d) "
                            "is not a pk_pg_reset", o->reset);
    return 0;
}

static struct pk_pg_pool *
pg_new(const pk_pg_options *o)
{
    struct pk_pg_pool *pg = calloc(1, sizeof *pg);
    pthread_condattr_t ca;

    if (!pg)
        return NULL;
    pg->conninfo = strdup(o->conninfo);
    if (!pg->conninfo || pthread_condattr_init(&ca) != 0) {
        free(pg->conninfo);
        free(pg);
        return NULL;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&pg->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0 || pthread_mutex_init(&pg->mu, NULL) != 0) {
        if (rc == 0)
            pthread_cond_destroy(&pg->cv);
        free(pg->conninfo);
        free(pg);
        return NULL;
    }
    pg->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms
                                                   : CONNECT_TIMEOUT_DEFAULT_MS;
    pg->reset_timeout_ms = o->reset_timeout_ms ? o->reset_timeout_ms
                                               : RESET_TIMEOUT_DEFAULT_MS;
    pg->reset = o->reset;
    return pg;
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
        .user_free = pg_user_free,
        .event = o->event, .event_user = o->event_user,
        .min_size = o->min_size, .max_size = o->max_size,
        .max_creating = o->max_creating,
        .check_after_ms = o->check_after_ms,
        .idle_timeout_ms = o->idle_timeout_ms,
        .max_lifetime_ms = o->max_lifetime_ms,
    };
    rc = pk_pool_options_check(&po, err);
    if (rc)
        return rc;
    struct pk_pg_pool *pg = pg_new(o);
    if (!pg)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "pk_pg_pool_create: "
                            "out of memory");
    po.user = pg;
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

struct waiter {
    struct pk_pg_pool *pg;
    int ready; /* pg->mu */
};

static void
on_ready(void *arg, pk_pool_ticket *t)
{
    struct waiter *w = arg;
    (void)t;
    pthread_mutex_lock(&w->pg->mu);
    w->ready = 1;
    pthread_cond_broadcast(&w->pg->cv);
    pthread_mutex_unlock(&w->pg->mu);
}

/* Waits for the ticket, a connect failure after seq, or the deadline
 * (the ticket's own timeout normally comes first: the core then makes it
 * ready). Returns 1 if a connect failed, copying it into *fail. */
static int
wait_ticket(struct pk_pg_pool *pg, struct waiter *w, uint64_t seq,
            uint64_t deadline, pk_error *fail)
{
    int failed = 0;

    pthread_mutex_lock(&pg->mu);
    while (!w->ready && pg->fail_seq == seq) {
        if (deadline == NO_DEADLINE) {
            pthread_cond_wait(&pg->cv, &pg->mu);
            continue;
        }
        struct timespec ts = { .tv_sec = (time_t)(deadline / 1000000000u),
                               .tv_nsec = (long)(deadline % 1000000000u) };
        if (pthread_cond_timedwait(&pg->cv, &pg->mu, &ts) == ETIMEDOUT)
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
    struct waiter w = { pg, 0 };
    pk_pool_ticket *t = NULL;
    pk_error fail = { 0, 0, "" };
    int ready = 0;

    pthread_mutex_lock(&pg->mu);
    uint64_t seq = pg->fail_seq;
    pthread_mutex_unlock(&pg->mu);
    int rc = pk_pool_acquire_async_at(pg->core, &t, timeout_ms, on_ready, &w,
                                      &ready, file, line);
    if (rc)
        return pk_error_set(err, rc, 0, "pk_pg_acquire: %s",
                            pk_strerror(rc));
    int failed = 0;
    if (!ready) {
        /* A second past the ticket's own timeout: only a safety net. */
        uint64_t deadline = timeout_ms == PK_WAIT_FOREVER
                                ? NO_DEADLINE
                                : deadline_after(timeout_ms) + 1000000000u;
        failed = wait_ticket(pg, &w, seq, deadline, &fail);
    }
    rc = pk_pool_ticket_take(t, lease, err);
    if (rc != PK_EAGAIN)
        return rc;
    pk_pool_ticket_free(t);
    if (failed) {
        if (err)
            *err = fail;
        return fail.code;
    }
    return pk_error_set(err, PK_ETIMEDOUT, 0, "pk_pg_acquire: timed out "
                        "after %d ms", timeout_ms);
}

int
pk_pg_acquire_at(pk_pg_pool *pool, pk_pg_lease *lease, int timeout_ms,
                 pk_error *err, const char *file, int line)
{
    if (!pool || pool->magic != PG_MAGIC || !lease || !file ||
        (timeout_ms < 0 && timeout_ms != PK_WAIT_FOREVER))
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_acquire: %s",
                            !pool || pool->magic != PG_MAGIC
                                ? "not a pk_pg_pool"
                                : !lease || !file ? "NULL argument"
                                                  : "bad timeout");
    memset(lease, 0, sizeof *lease);
    int rc;
    if (timeout_ms == 0)
        rc = pk_pool_acquire_at(pool->core, &lease->lease_, 0, err, file,
                                line);
    else
        rc = acquire_ticket(pool, &lease->lease_, timeout_ms, err, file,
                            line);
    if (rc == 0)
        lease->conn = lease->lease_.resource;
    return rc;
}

int
pk_pg_release(pk_pg_pool *pool, pk_pg_lease *lease, int status)
{
    if (!pool || pool->magic != PG_MAGIC || !lease || !lease->conn ||
        lease->conn != lease->lease_.resource)
        return PK_EINVAL;
    if (status == PK_RELEASE_OK && PQstatus(lease->conn) != CONNECTION_OK)
        status = PK_RELEASE_BROKEN;
    int rc = pk_pool_release(pool->core, &lease->lease_, status);
    if (rc == 0)
        lease->conn = NULL;
    return rc;
}

pk_pool *
pk_pg_pool_core(pk_pg_pool *pool)
{
    return pool && pool->magic == PG_MAGIC ? pool->core : NULL;
}

int
pk_pg_pool_close(pk_pg_pool *pool, int timeout_ms)
{
    if (!pool || pool->magic != PG_MAGIC)
        return PK_EINVAL;
    return pk_pool_close(pool->core, timeout_ms);
}

void
pk_pg_pool_destroy(pk_pg_pool *pool)
{
    if (!pool || pool->magic != PG_MAGIC)
        return;
    /* The handle itself is freed by pg_user_free, after the last
     * connection is destroyed (maybe inside this call). */
    pk_pool_destroy(pool->core);
}

/* ---- SQLSTATE ------------------------------------------------------------ */

static int
pack_sqlstate(const char *s)
{
    int v = 0;
    if (!s || strlen(s) != 5)
        return 0;
    for (int i = 0; i < 5; i++)
        v += PGSIXBIT(s[i]) << (6 * i);
    return v;
}

int
pk_pg_sqlstate(int sys, char out[6])
{
    if (!out)
        return PK_EINVAL;
    char buf[6];
    if ((unsigned)sys >> 30)
        return PK_EINVAL;
    for (int i = 0; i < 5; i++) {
        char ch = (char)(((sys >> (6 * i)) & 0x3F) + '0');
        if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z')))
            return PK_EINVAL;
        buf[i] = ch;
    }
    buf[5] = '\0';
    memcpy(out, buf, sizeof buf);
    return 0;
}

/* Connection-class: the session is gone or cannot be trusted. */
static int
conn_class(const char *st)
{
    if (!st)
        return 0;
    return strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0 ||
           strcmp(st, "57P02") == 0 || strcmp(st, "57P03") == 0;
}

/* The release status a connection earns after its last result. */
static int
status_after(PGconn *c, const PGresult *last)
{
    if (PQstatus(c) != CONNECTION_OK)
        return PK_RELEASE_BROKEN;
    if (last && conn_class(PQresultErrorField(last, PG_DIAG_SQLSTATE)))
        return PK_RELEASE_BROKEN;
    return PK_RELEASE_OK;
}

int
pk_pg_release_result(pk_pg_pool *pool, pk_pg_lease *lease,
                     const struct pg_result *last)
{
    if (!pool || pool->magic != PG_MAGIC || !lease || !lease->conn)
        return PK_EINVAL;
    return pk_pg_release(pool, lease, status_after(lease->conn, last));
}

/* Fills err from a failed result (or from the connection when r is
 * NULL): PK_EADAPTER, sys = the packed SQLSTATE, msg = the primary
 * message on one line. A lost connection that carries no SQLSTATE gets
 * 08006 (connection_failure). */
static int
set_result_error(pk_error *err, PGconn *c, const PGresult *r)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)
                        : NULL;
    if (!msg && r)
        msg = PQresultErrorMessage(r);
    if (!msg || !*msg)
        msg = PQerrorMessage(c);
    if (!st && PQstatus(c) != CONNECTION_OK)
        st = "08006";
    return set_pq_error(err, PK_EADAPTER, pack_sqlstate(st), "", msg);
}

/* ---- pk_pg_exec ------------------------------------------------------- */

/* Reads results until libpq has none left, the connection fails, or the
 * deadline. Keeps the first failed result, else the last one, in *keep
 * (may be NULL: then everything is cleared). Returns 1 done, 0 deadline,
 * -1 connection failure. */
static int
read_results(PGconn *c, uint64_t deadline, PGresult **keep)
{
    int fd = PQsocket(c);
    for (;;) {
        int f = PQflush(c);
        if (f < 0)
            return -1;
        while (f == 0 && !PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (!r)
                return 1;
            if (!keep) {
                PQclear(r);
                continue;
            }
            if (*keep && PQresultStatus(*keep) == PGRES_FATAL_ERROR) {
                PQclear(r); /* keep the first failure */
            } else {
                PQclear(*keep);
                *keep = r;
            }
            if (PQstatus(c) != CONNECTION_OK)
                return -1;
        }
        int r = wait_fd(fd, f == 1 ? (POLLIN | POLLOUT) : POLLIN, deadline);
        if (r == 0)
            return 0;
        if (r < 0 || !PQconsumeInput(c))
            return -1;
    }
}

int
pk_pg_exec(pk_pg_pool *pool, const char *sql, int nparams,
           const char *const *params, int timeout_ms, struct pg_result **out,
           pk_error *err)
{
    if (out)
        *out = NULL;
    if (!pool || pool->magic != PG_MAGIC || !sql || !out || nparams < 0 ||
        (nparams > 0 && !params) ||
        (timeout_ms <= 0 && timeout_ms != PK_WAIT_FOREVER))
        return pk_error_set(err, PK_EINVAL, 0, "pk_pg_exec: %s",
                            !pool || pool->magic != PG_MAGIC
                                ? "not a pk_pg_pool"
                            : !sql || !out ? "NULL argument"
                            : nparams < 0 || (nparams > 0 && !params)
                                ? "bad parameters"
                                : "bad timeout (positive or "
                                  "PK_WAIT_FOREVER)");
    uint64_t deadline = deadline_after(timeout_ms);
    pk_pg_lease l;
    int rc = pk_pg_acquire_at(pool, &l, timeout_ms, err, __FILE__, __LINE__);
    if (rc)
        return rc;
    PGconn *c = l.conn;
    if (deadline != NO_DEADLINE && now_ns() >= deadline) {
        pk_pg_release(pool, &l, PK_RELEASE_OK);
        return pk_error_set(err, PK_ETIMEDOUT, 0, "pk_pg_exec: timed out "
                            "after %d ms (acquire)", timeout_ms);
    }
    if (PQsetnonblocking(c, 1) != 0 ||
        !PQsendQueryParams(c, sql, nparams, NULL, params, NULL, NULL, 0)) {
        rc = set_result_error(err, c, NULL);
        pk_pg_release(pool, &l, status_after(c, NULL));
        return rc;
    }
    PGresult *res = NULL;
    int done = read_results(c, deadline, &res);
    if (done == 1 || done < 0) {
        ExecStatusType s = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        int status = status_after(c, res);
        if (done == 1 && s != PGRES_FATAL_ERROR && s != PGRES_BAD_RESPONSE) {
            pk_pg_release(pool, &l, status);
            *out = res;
            return 0;
        }
        rc = set_result_error(err, c, res);
        PQclear(res);
        pk_pg_release(pool, &l, status);
        return rc;
    }
    /* The deadline: cancel the query on the server (PQcancel opens a new
     * connection and waits for it: blocking, briefly), then drain the
     * cancelled query's results within EXEC_DRAIN_MS, or close. */
    PQclear(res);
    char ebuf[256];
    int cancelled = 0;
    PGcancel *cn = PQgetCancel(c);
    if (cn) {
        cancelled = PQcancel(cn, ebuf, sizeof ebuf);
        PQfreeCancel(cn);
    }
    int status = PK_RELEASE_BROKEN;
    if (cancelled && read_results(c, deadline_after(EXEC_DRAIN_MS), NULL) ==
                         1 &&
        PQstatus(c) == CONNECTION_OK)
        status = PK_RELEASE_OK; /* idle; the reset rolls back if needed */
    pk_pg_release(pool, &l, status);
    return pk_error_set(err, PK_ETIMEDOUT, 0, "pk_pg_exec: timed out after "
                        "%d ms; the query was cancelled%s", timeout_ms,
                        status == PK_RELEASE_OK
                            ? ""
                            : " and its connection closed");
}
