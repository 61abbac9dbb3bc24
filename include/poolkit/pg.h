/* poolkit/pg.h - a pool of PostgreSQL connections (libpq), built on
 * pk_pool. Library libpoolkit-pg, pkg-config poolkit-pg.
 *
 * Each resource is a PGconn. The adapter supplies the pool's hooks:
 *   create           a non-blocking connect (PQconnectStartParams and
 *                    PQconnectPoll, poll() on PQsocket) that ends by
 *                    connect_timeout_ms whatever the server does;
 *   check            before lending a connection idle longer than
 *                    check_after_ms: a liveness test without a round trip
 *                    (poll the socket with a zero timeout; EOF or data
 *                    sent by the server while idle, such as the FATAL of a
 *                    shutdown, are read with PQconsumeInput, then
 *                    PQstatus decides);
 *   reset            on release: ROLLBACK when PQtransactionStatus says a
 *                    transaction is open or failed, then, in the default
 *                    PK_PG_RESET_FULL mode, the one statement `DISCARD
 *                    ALL` (session settings, temp tables, prepared
 *                    statements, LISTEN, advisory locks, cursors, plans,
 *                    sequences state, SET ROLE/SESSION AUTHORIZATION); a
 *                    connection still busy with a query, or whose reset
 *                    fails or takes longer than reset_timeout_ms, is
 *                    closed instead of lent again;
 *   destroy          PQfinish;
 *   forget_in_child  after fork(), in the child: close(PQsocket(conn))
 *                    only. No Terminate message is sent (the parent's
 *                    session goes on) and the PGconn is not freed: the
 *                    child leaks its copy's memory, since PQfinish would
 *                    speak the protocol.
 *
 * Query helper. pk_pg_exec borrows a connection, runs one statement with
 * its parameters and gives the connection back, all by one deadline; a
 * query past it is cancelled on the server. A failed query's SQLSTATE
 * reaches the caller in pk_error.sys (pk_pg_sqlstate reads it), and a
 * connection-class failure (SQLSTATE class 08, 57P01, 57P02, 57P03)
 * releases the connection BROKEN: the core then checks every older idle
 * connection before lending it. Callers who run libpq themselves get the
 * same decision from pk_pg_release_result.
 *
 * This header does not include <libpq-fe.h>: a connection is a `struct
 * pg_conn *`, libpq's PGconn (typedef struct pg_conn PGconn), and a
 * result a `struct pg_result *`, libpq's PGresult. */
#ifndef POOLKIT_PG_H
#define POOLKIT_PG_H

#include <stddef.h>

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
    PK_PG_RESET_FULL = 0,    /* default: ROLLBACK if needed, then DISCARD
                                ALL (one round trip, two if a transaction
                                was left open) */
    PK_PG_RESET_ROLLBACK = 1 /* ROLLBACK only when a transaction is open
                                or failed, else no round trip: for callers
                                who promise not to change session state */
};

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
     * check_after_ms default 1000, idle_timeout_ms and max_lifetime_ms
     * off by default). */
    size_t min_size;
    size_t max_size;
    size_t max_creating;
    int check_after_ms;
    int idle_timeout_ms;
    int max_lifetime_ms;

    /* One connect attempt, all hosts of the conninfo included, ends by
     * this deadline (default 10000; PK_NEVER: no limit). Enforced by the
     * adapter: libpq's own connect_timeout is not applied by
     * PQconnectPoll. */
    int connect_timeout_ms;
    /* The reset on release ends by this deadline, or the connection is
     * closed (default 5000). */
    int reset_timeout_ms; /* 0 or positive */
    int reset;            /* enum pk_pg_reset */

    pk_event_fn event; /* the core's events (pool.h); optional */
    void *event_user;
} pk_pg_options;

/* A borrowed connection: `conn` is the caller's until pk_pg_release; the
 * field ending in _ is the pool's. */
typedef struct pk_pg_lease {
    struct pg_conn *conn;
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

/* Gives a connection back. status is a pk_release_status: OK resets it
 * (see the top of this header) and lends it again, but a connection whose
 * PQstatus is not CONNECTION_OK is released BROKEN whatever status says;
 * BROKEN closes it and makes every older idle connection pass a check
 * before it is lent; DETACH: the pool forgets it and the caller owns the
 * PGconn (PQfinish it).
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

/* Runs one statement: borrows a connection (waiting up to timeout_ms),
 * sends sql with its nparams text parameters ($1, $2, ...; params[i]
 * NULL is SQL NULL; types inferred by the server, so cast them:
 * "SELECT $1::int + 1") through PQsendQueryParams, waits for the result
 * with poll() on the socket, and gives the connection back. The whole
 * call, acquire included, ends by timeout_ms: a query still running then
 * is cancelled on the server (PQgetCancel/PQcancel; PQcancel opens a
 * connection of its own to the server and blocks until the server takes
 * the request, usually a millisecond or two, longer if the server is slow
 * to accept), then its results are drained for up to 500 ms so the
 * connection goes back idle; one that does not come back idle in that
 * time is closed (released BROKEN). A connection whose query was
 * abandoned is never lent busy. One statement only (the extended
 * protocol). Results are requested in text format.
 * On failure of the query: PK_EADAPTER, err->sys = the SQLSTATE packed as
 * PostgreSQL's MAKE_SQLSTATE packs it (pk_pg_sqlstate reads it back;
 * 08006 when libpq lost the connection without one), err->msg = the
 * server's primary message on one line; a connection-class SQLSTATE (see
 * pk_pg_release_result) releases the connection BROKEN, any other
 * releases it OK (an open transaction is rolled back by the reset).
 * Returns: 0 (*out = the result: PGRES_TUPLES_OK, PGRES_COMMAND_OK or
 * another non-error status), PK_EADAPTER (the query failed; err as
 * above), PK_ETIMEDOUT (acquire or query past timeout_ms; "the query was
 * cancelled" in err->msg when it ran), PK_EINVAL (NULL pool, sql or out,
 * nparams < 0, params NULL with nparams > 0, timeout_ms 0 or negative
 * other than PK_WAIT_FOREVER), and the acquire's codes (PK_ECONNECT,
 * PK_ESHUTDOWN, PK_EFORKED, PK_ENOMEM, PK_ECREATE); *out is NULL on
 * every failure.
 * Owner: *out returned owned (PQclear it); sql, params and err borrowed
 * (err may be NULL). Threads: safe; the query, its cancel and the reset
 * run on the calling thread. */
PK_API int pk_pg_exec(pk_pg_pool *pool, const char *sql, int nparams,
                      const char *const *params, int timeout_ms,
                      struct pg_result **out, pk_error *err);

/* Unpacks a SQLSTATE packed by PostgreSQL's MAKE_SQLSTATE (as pk_pg_exec
 * leaves it in pk_error.sys: 6 bits a character, (ch - '0') & 0x3F, the
 * i-th character shifted left by 6*i) into five characters and a NUL:
 * 22012 for division_by_zero.
 * Returns: 0, PK_EINVAL (out NULL, or sys is not a packed SQLSTATE of
 * digits and capital letters; out is left alone). Owner: out borrowed.
 * Threads: safe. */
PK_API int pk_pg_sqlstate(int sys, char out[6]);

/* The core pool underneath, for what pool.h offers as it is (stats,
 * evict_all, pause/resume, resize, maintain). Do not destroy it, and do
 * not lend from it directly with a timeout (pk_pg_acquire reports failed
 * connects; pk_pool_acquire would retry them until its deadline).
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
