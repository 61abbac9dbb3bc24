/* poolkit/pg.h - a pool of PostgreSQL connections (libpq), built on
 * pk_pool. Library libpoolkit-pg, pkg-config poolkit-pg.
 *
 * Each resource is a connection. The adapter supplies the pool's hooks:
 *   create           a non-blocking connect (PQconnectStartParams and
 *                    PQconnectPoll, poll() on PQsocket) that ends by
 *                    connect_timeout_ms whatever the server does; then
 *                    init_sql and the init hook, by the same deadline
 *                    (the hook itself is the user's code: it keeps its
 *                    own time); the connection's notices (and a FATAL
 *                    that arrives while it is idle) are dropped instead
 *                    of printed to stderr, as libpq would: install a
 *                    notice processor in init to see them;
 *   check            before lending a connection idle longer than
 *                    check_after_ms: a liveness test without a round trip
 *                    (poll the socket with a zero timeout; EOF or data
 *                    sent by the server while idle, such as the FATAL of a
 *                    shutdown or of idle_session_timeout, are read with
 *                    PQconsumeInput, then PQstatus decides); with
 *                    check_query, an empty query too (one round trip);
 *   reset            on release: ROLLBACK when PQtransactionStatus says a
 *                    transaction is open or failed, then the reset mode's
 *                    statements (enum pk_pg_reset); a connection still
 *                    busy with a query, or whose reset fails or takes
 *                    longer than reset_timeout_ms, is closed instead of
 *                    lent again;
 *   destroy          the fini hook, then PQfinish; a connection closed
 *                    while a query still runs on it is first cancelled on
 *                    the server (PQcancel) by a short-lived thread of its
 *                    own, so the releasing caller does not wait for it;
 *   forget_in_child  after fork(), in the child: close(PQsocket(conn))
 *                    only. No Terminate message is sent (the parent's
 *                    session goes on), fini does not run and the PGconn is
 *                    not freed: the child leaks its copy's memory, since
 *                    PQfinish would speak the protocol.
 *
 * Query helpers. pk_pg_exec borrows a connection, runs one statement with
 * its parameters and gives the connection back, all by one deadline; a
 * query past it is cancelled on the server. pk_pg_query does the same on
 * a connection the caller holds, and pk_pg_transaction runs the caller's
 * function inside a transaction, retrying it on a serialization failure
 * or a deadlock. A failed query's SQLSTATE reaches the caller in
 * pk_error.sys (pk_pg_sqlstate reads it), and a connection-class failure
 * (SQLSTATE class 08, 57P01, 57P02, 57P03; 25006 too with
 * require_writable) releases the connection BROKEN: the core then checks
 * every older idle connection before lending it. Callers who run libpq
 * themselves get the same decision from pk_pg_release_result.
 *
 * Prepared statements. With the statement cache on (the default), the
 * helpers prepare a statement on its second use on a connection (named
 * pk_s<n>) and run it by name afterwards; a connection keeps up to
 * statement_cache of them, the least recently used deallocated first. A
 * statement whose plan the server rejects after a schema change ("cached
 * plan must not change result type", SQLSTATE 0A000) is prepared again
 * and run again once when no transaction is open; inside a transaction
 * the error is returned (pk_pg_transaction retries it) and the statement
 * is prepared again after the transaction.
 *
 * PgBouncer. In its transaction pooling mode a session is not yours
 * between transactions: set pgbouncer_transaction_mode, which turns the
 * statement cache off and makes the full reset a ROLLBACK (a custom reset
 * still runs).
 *
 * This header does not include <libpq-fe.h>: a connection is a `struct
 * pg_conn *`, libpq's PGconn (typedef struct pg_conn PGconn), and a
 * result a `struct pg_result *`, libpq's PGresult. */
#ifndef POOLKIT_PG_H
#define POOLKIT_PG_H

#include <stddef.h>
#include <stdint.h>

#include <poolkit/error.h>
#include <poolkit/event.h>
#include <poolkit/pool.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pg_conn;   /* libpq's PGconn */
struct pg_result; /* libpq's PGresult */

typedef struct pk_pg_pool pk_pg_pool; /* opaque */

enum pk_pg_reset {
    /* The default: ROLLBACK if a transaction is open, then, in one round
     * trip, SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL;
     * UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD
     * PLANS; DISCARD SEQUENCES; and a look at pg_prepared_statements: a
     * statement that is not the statement cache's nor made by init_sql or
     * the init hook (the borrower's) is deallocated, in a second round
     * trip only when there is one.
     * RESET ALL undoes a SET run by init_sql: put session settings in the
     * conninfo instead (application_name=..., options='-c
     * search_path=app'), which RESET ALL returns to. A temporary table
     * init made is dropped too. */
    PK_PG_RESET_FULL = 0,
    /* ROLLBACK only when a transaction is open or failed, else no round
     * trip: for callers who promise not to change session state. */
    PK_PG_RESET_ROLLBACK = 1,
    /* ROLLBACK if needed, then the options' reset_sql; the statement cache
     * is forgotten after it (the adapter cannot tell what it dropped). */
    PK_PG_RESET_CUSTOM = 2
};

/* Runs once on each new connection, after init_sql, before the connection
 * is first lent: prepare statements, build a context. *ctx starts NULL;
 * what it is set to is handed to every borrower (pk_pg_lease.ctx) and to
 * fini. Returns 0, or a negative code with err filled: the connect counts
 * as failed (the core backs off and retries). Runs on the thread that
 * makes the connection, with no lock held. */
typedef int (*pk_pg_init_fn)(struct pg_conn *conn, void **ctx, void *user,
                             pk_error *err);
/* Runs when a connection is closed, before PQfinish (not in a child after
 * fork(), see forget_in_child). Frees what init made. */
typedef void (*pk_pg_fini_fn)(struct pg_conn *conn, void *ctx, void *user);

/* Zero in any field means its documented default. Strings are copied at
 * create; the struct is not kept. */
typedef struct pk_pg_options {
    /* Required: any conninfo string or URI libpq accepts ("host=/tmp
     * dbname=app", "postgresql://u@h1,h2/db?target_session_attrs=
     * read-write"). A malformed one is PK_EINVAL at create, with libpq's
     * message. */
    const char *conninfo;

    /* The core's sizes and policies, passed through as pk_pool_options
     * defines them (max_size default 8, max_creating default 2,
     * check_after_ms default 1000, idle_timeout_ms, max_lifetime_ms and
     * held_too_long_ms off by default). A lease held longer than
     * held_too_long_ms raises PK_EVENT_HELD_TOO_LONG with its acquire
     * site and counts in leaks_suspected. */
    size_t min_size;
    size_t max_size;
    size_t max_creating;
    int check_after_ms;
    int idle_timeout_ms;
    int max_lifetime_ms;
    int held_too_long_ms;

    /* One connect attempt, all hosts of the conninfo and the init steps
     * included, ends by this deadline (default 10000; PK_NEVER: no limit).
     * Enforced by the adapter: libpq's own connect_timeout is not applied
     * by PQconnectPoll. */
    int connect_timeout_ms;
    /* The reset on release, and the check's empty query, end by this
     * deadline, or the connection is closed (default 5000). */
    int reset_timeout_ms; /* 0 or positive */
    int reset;            /* enum pk_pg_reset */
    const char *reset_sql; /* PK_PG_RESET_CUSTOM's statements; required
                              with it, refused without it */

    /* Per-connection set-up (all optional). init_sql runs first (simple
     * protocol: several statements separated by `;` are allowed). */
    const char *init_sql;
    pk_pg_init_fn init;
    pk_pg_fini_fn fini;
    void *init_user;     /* passed to init and fini */

    int check_query;      /* nonzero: the check also sends an empty query */
    int require_writable; /* nonzero: SQLSTATE 25006 (read-only
                             transaction: a standby, or a primary that
                             became one) also releases BROKEN */
    int pgbouncer_transaction_mode; /* nonzero: see the top of this header */
    /* Prepared statements kept per connection (default 64; -1: off). */
    int statement_cache;

    pk_event_fn event; /* the core's events (pool.h); optional. An event's
                          resource is the adapter's record of the
                          connection, an identity only (not a PGconn) */
    void *event_user;
} pk_pg_options;

/* A borrowed connection: `conn` is the caller's until pk_pg_release, `ctx`
 * is what the init hook made for it (NULL without one); the field ending
 * in _ is the pool's. */
typedef struct pk_pg_lease {
    struct pg_conn *conn;
    void *ctx;
    pk_lease lease_;
} pk_pg_lease;

/* Makes a pool of connections to o->conninfo; min_size connections are
 * made before it returns (a failed connect there is not an error: the
 * pool retries it in the background).
 * Returns: 0, PK_EINVAL (NULL out or o, no conninfo, a malformed
 * conninfo, bad sizes or times: err says which), PK_ENOMEM, PK_ECREATE
 * (the maintenance thread could not start).
 * Owner: *out returned owned (pk_pg_pool_destroy); o and err borrowed
 * (err may be NULL). Threads: safe. */
PK_API int pk_pg_pool_create(pk_pg_pool **out, const pk_pg_options *o,
                             pk_error *err);

/* Lends a connection, waiting up to timeout_ms (0: only an idle one, no
 * wait, PK_EAGAIN otherwise; PK_WAIT_FOREVER: no limit). A connect this
 * call needs runs on the core's helper thread, so the call returns by its
 * deadline even while a server accepts and never answers. When a connect
 * fails while this call waits and nothing was handed to it, it returns
 * that failure at once (PK_ECONNECT, libpq's message in err) instead of
 * waiting for its deadline; while the server stays down, a call whose
 * deadline comes before the pool's next attempt fails at once with the
 * last message, replayed (pool.h, pk_pool_acquire).
 * Returns: 0 (lease->conn set), PK_EINVAL, PK_EAGAIN, PK_ETIMEDOUT,
 * PK_ECONNECT, PK_ESHUTDOWN, PK_EFORKED, PK_ENOMEM, PK_ECREATE.
 * Owner: lease and err borrowed (err may be NULL); lease->conn is
 * borrowed until pk_pg_release. Threads: safe; the connection belongs to
 * the calling thread until released. */
PK_API int pk_pg_acquire_at(pk_pg_pool *pool, pk_pg_lease *lease,
                            int timeout_ms, pk_error *err, const char *file,
                            int line);
#define pk_pg_acquire(pool, lease, timeout_ms, err)                         \
    pk_pg_acquire_at((pool), (lease), (timeout_ms), (err), __FILE__,        \
                     __LINE__)

/* Asks for a connection without blocking, for event loops: the core's
 * async acquire (pool.h, pk_pool_acquire_async) on this pool. When the
 * ticket is ready (cb runs, or *ready is 1, or pk_pool_ticket_fd becomes
 * readable), take the connection with pk_pg_ticket_take. Connects run on
 * the core's helper thread; while they fail, the ticket follows the
 * core's rule and ends by its timeout with the last connect error.
 * PQsocket(lease->conn) then gives the socket for the caller's own async
 * libpq calls (PQsendQuery...).
 * Returns: as pk_pool_acquire_async_at (0, PK_EINVAL, PK_ESHUTDOWN,
 * PK_EFORKED, PK_ENOMEM). Owner: *ticket returned owned
 * (pk_pg_ticket_take, or pk_pool_ticket_free to give up). Threads: safe. */
PK_API int pk_pg_acquire_async_at(pk_pg_pool *pool, pk_pool_ticket **ticket,
                                  int timeout_ms, pk_ticket_fn cb, void *arg,
                                  int *ready, const char *file, int line);
#define pk_pg_acquire_async(pool, ticket, timeout_ms, cb, arg, ready)       \
    pk_pg_acquire_async_at((pool), (ticket), (timeout_ms), (cb), (arg),     \
                           (ready), __FILE__, __LINE__)

/* Takes the connection of a ready ticket into lease (pk_pool_ticket_take
 * with the adapter's lease). Returns its codes: 0 (the ticket is consumed,
 * lease->conn set), PK_EAGAIN (not ready yet; call again later),
 * PK_ETIMEDOUT, PK_ECONNECT and the others with err filled (the ticket is
 * consumed). Owner: takes ticket unless PK_EAGAIN. Threads: safe. */
PK_API int pk_pg_ticket_take(pk_pg_pool *pool, pk_pool_ticket *ticket,
                             pk_pg_lease *lease, pk_error *err);

/* Gives a connection back. status is a pk_release_status: OK resets it
 * (see the top of this header) and lends it again, but a connection whose
 * PQstatus is not CONNECTION_OK, or on which a helper saw a
 * connection-class failure, is released BROKEN whatever status says;
 * BROKEN closes it and makes every older idle connection pass a check
 * before it is lent; DETACH: the pool forgets it and the caller owns the
 * PGconn (PQfinish it) and the ctx (fini does not run): for a session
 * that outlives the lease, such as LISTEN or a session advisory lock.
 * Returns: 0, PK_EINVAL (NULL, a lease not held, a bad status: nothing
 * changes), PK_EFORKED. Owner: takes the lease (cleared on success).
 * Threads: safe; the reset runs on this thread. */
PK_API int pk_pg_release(pk_pg_pool *pool, pk_pg_lease *lease, int status);

/* Gives a connection back after the caller ran libpq on it, deciding
 * the status from `last`, the last PGresult the caller got (NULL: none):
 * BROKEN when PQstatus is not CONNECTION_OK or when last failed with a
 * connection-class SQLSTATE (class 08, 57P01 admin_shutdown, 57P02
 * crash_shutdown, 57P03 cannot_connect_now), else OK (then reset as
 * pk_pg_release does). last is only read; the caller still PQclears it.
 * Returns: as pk_pg_release. Owner: takes the lease; last borrowed.
 * Threads: safe; the reset runs on this thread. */
PK_API int pk_pg_release_result(pk_pg_pool *pool, pk_pg_lease *lease,
                                const struct pg_result *last);

/* Runs one statement on a connection the caller holds: sends sql with
 * its nparams text parameters ($1, $2, ...; params[i] NULL is SQL NULL;
 * types inferred by the server, so cast them: "SELECT $1::int + 1")
 * through the extended protocol (by name when the statement cache has it,
 * see the top of this header), waits for the result with poll() on the
 * socket, and ends by timeout_ms: a query still running then is cancelled
 * on the server (PQgetCancel/PQcancel; PQcancel opens a connection of its
 * own to the server and blocks until the server takes the request,
 * usually a millisecond or two), then its results are drained for up to
 * 500 ms so the connection is idle again (in a failed transaction if one
 * was open); one that does not come back in that time is marked to be
 * closed when released. One statement only. Results are in text format.
 * On failure of the query: PK_EADAPTER, err->sys = the SQLSTATE packed as
 * PostgreSQL's MAKE_SQLSTATE packs it (pk_pg_sqlstate reads it back;
 * 08006 when libpq lost the connection without one), err->msg = the
 * server's primary message on one line; after a connection-class
 * SQLSTATE (see pk_pg_release_result) the connection is released BROKEN
 * whatever status pk_pg_release is given.
 * Returns: 0 (*out = the result: PGRES_TUPLES_OK, PGRES_COMMAND_OK or
 * another non-error status), PK_EADAPTER (the query failed; err as
 * above), PK_ETIMEDOUT ("the query was cancelled" in err->msg), PK_EINVAL
 * (a lease not held, NULL sql or out, nparams < 0, params NULL with
 * nparams > 0, timeout_ms 0 or negative other than PK_WAIT_FOREVER, or a
 * connection left busy by the caller's own libpq calls); *out is NULL on
 * every failure.
 * Owner: *out returned owned (PQclear it); lease, sql, params and err
 * borrowed (err may be NULL). Threads: the lease's holder only. */
PK_API int pk_pg_query(pk_pg_lease *lease, const char *sql, int nparams,
                       const char *const *params, int timeout_ms,
                       struct pg_result **out, pk_error *err);

/* Runs one statement on a connection of the pool: borrows one (waiting
 * for it within timeout_ms), runs pk_pg_query with the time left, and
 * gives the connection back (BROKEN after a connection-class failure,
 * else OK: an open transaction is rolled back by the reset). The whole
 * call ends by timeout_ms.
 * Returns: pk_pg_query's codes (PK_ETIMEDOUT also when no connection came
 * in time), and the acquire's (PK_ECONNECT, PK_ESHUTDOWN, PK_EFORKED,
 * PK_ENOMEM, PK_ECREATE). PK_EINVAL for a NULL or invalid pool too.
 * Owner: as pk_pg_query. Threads: safe; the query, its cancel and the
 * reset run on the calling thread. */
PK_API int pk_pg_exec_at(pk_pg_pool *pool, const char *sql, int nparams,
                         const char *const *params, int timeout_ms,
                         struct pg_result **out, pk_error *err,
                         const char *file, int line);
/* Variadic so that a compound literal array of parameters, commas and
 * all, passes through: (const char *const[]){ "1", "2" }. */
#define pk_pg_exec(pool, ...)                                               \
    pk_pg_exec_at((pool), __VA_ARGS__, __FILE__, __LINE__)

/* A transaction's body: runs its statements on l (pk_pg_query, or libpq
 * directly) and returns 0 to commit, or a negative code (with err
 * filled) to roll back. Return pk_pg_query's PK_EADAPTER as it came, with
 * its err: that is how a serialization failure reaches the retry. It may
 * run more than once: keep side effects outside the database idempotent. */
typedef int (*pk_pg_txn_fn)(pk_pg_lease *l, void *arg, pk_error *err);

/* Runs fn inside a transaction: borrows a connection, sends begin_sql
 * (NULL: "BEGIN"; "BEGIN ISOLATION LEVEL SERIALIZABLE", say), runs fn,
 * and COMMITs when it returns 0, else ROLLBACKs. When fn or the COMMIT
 * fails with SQLSTATE 40001 (serialization_failure) or 40P01
 * (deadlock_detected), or with a statement invalidated by a schema
 * change, it rolls back, waits a moment (random, growing up to 100 ms)
 * and runs the whole transaction again, up to max_attempts times in all
 * (0: 5). No attempt starts after timeout_ms; BEGIN, COMMIT and ROLLBACK
 * end by it (ROLLBACK gets at least reset_timeout_ms); fn's own queries
 * keep the timeouts fn gives them. A COMMIT of a transaction that failed
 * inside fn (fn returned 0 after an error) is not a commit: PK_EADAPTER,
 * "the transaction had failed".
 * Returns: 0 (committed), fn's code (rolled back), PK_EADAPTER (BEGIN or
 * COMMIT failed; the last SQLSTATE in err->sys, also after the last
 * attempt of a retried failure), PK_ETIMEDOUT, PK_EINVAL (NULL pool or fn,
 * max_attempts < 0, timeout_ms 0 or negative other than PK_WAIT_FOREVER),
 * and the acquire's codes.
 * Owner: begin_sql, arg and err borrowed (err may be NULL). Threads:
 * safe; fn runs on the calling thread. */
PK_API int pk_pg_transaction_at(pk_pg_pool *pool, const char *begin_sql,
                                int max_attempts, int timeout_ms,
                                pk_pg_txn_fn fn, void *arg, pk_error *err,
                                const char *file, int line);
#define pk_pg_transaction(pool, begin_sql, max_attempts, timeout_ms, fn,    \
                          arg, err)                                         \
    pk_pg_transaction_at((pool), (begin_sql), (max_attempts), (timeout_ms), \
                         (fn), (arg), (err), __FILE__, __LINE__)

/* Unpacks a SQLSTATE packed by PostgreSQL's MAKE_SQLSTATE (as pk_pg_exec
 * leaves it in pk_error.sys: 6 bits a character, (ch - '0') & 0x3F, the
 * i-th character shifted left by 6*i) into five characters and a NUL:
 * 22012 for division_by_zero.
 * Returns: 0, PK_EINVAL (out NULL, or sys is not a packed SQLSTATE of
 * digits and capital letters; out is left alone). Owner: out borrowed.
 * Threads: safe. */
PK_API int pk_pg_sqlstate(int sys, char out[6]);

typedef struct pk_pg_stats {
    pk_pool_stats core;          /* pk_pool_stats_get of the core */
    uint64_t connects_ok;        /* connects with their init steps */
    uint64_t connects_failed;
    uint64_t connect_p50_us;     /* time a successful connect took */
    uint64_t connect_p99_us;
    uint64_t checks_failed;      /* the check said dead */
    uint64_t resets_rollback;    /* releases that sent a ROLLBACK */
    uint64_t resets_full;        /* ... that ran the full reset */
    uint64_t resets_custom;      /* ... that ran reset_sql */
    uint64_t resets_failed;      /* resets that closed the connection */
    uint64_t queries_cancelled;  /* by a timeout, or at a busy release */
    uint64_t leaks_suspected;    /* PK_EVENT_HELD_TOO_LONG raised */
    uint64_t statements_prepared; /* by the statement cache */
} pk_pg_stats;

/* Fills *out. Counters are read one by one (each exact, the set not one
 * instant); the connect percentiles are the upper edge of a bucket about
 * 19% wide (poolkit/hist.h). Returns: 0, PK_EINVAL, PK_EFORKED. Threads: safe. */
PK_API int pk_pg_stats_get(pk_pg_pool *pool, pk_pg_stats *out);

/* The core pool underneath, for what pool.h offers as it is (stats,
 * evict_all, pause/resume, resize, maintain). Do not destroy it, and do
 * not lend from it directly: its resources are the adapter's records of
 * connections, not PGconns (pk_pg_acquire lends those, and reports failed
 * connects at once where pk_pool_acquire would retry them until its
 * deadline).
 * Returns: the core, or NULL for NULL. Owner: returns borrowed (valid
 * until pk_pg_pool_destroy). Threads: safe. */
PK_API pk_pool *pk_pg_pool_core(pk_pg_pool *pool);

/* Stops lending and waits up to timeout_ms for lent connections (see
 * pk_pool_close). Returns: 0, PK_ETIMEDOUT, PK_EINVAL, PK_EFORKED.
 * Owner: borrows pool. Threads: safe. */
PK_API int pk_pg_pool_close(pk_pg_pool *pool, int timeout_ms);

/* Closes every connection and frees the pool; a lease still out keeps
 * the pool's memory until it is released. In a child after fork(), only
 * forget_in_child runs (see the top of this header). NULL is a no-op.
 * Owner: takes pool. Threads: exclusive. */
PK_API void pk_pg_pool_destroy(pk_pg_pool *pool);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_PG_H */
