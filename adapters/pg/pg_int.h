/* adapters/pg/pg_int.h - what the PostgreSQL adapter's files share.
 *
 * Three files, each calling only the ones above it in this list:
 *   conn.c   one connection: the record the core pools (the PGconn, the
 *            init hook's context, the statement cache), waiting on libpq
 *            by a deadline, SQLSTATE packing, error text;
 *   pool.c   the pool: options, the core's hooks, acquire, release,
 *            stats;
 *   query.c  statements on a lease or on the pool, transactions with
 *            retry.
 * Deadlines and waits on a socket are the core's (pool.h, "deadlines":
 * pk_deadline_after, pk_deadline_ms_left, pk_wait_fd, PK_NO_DEADLINE).
 * Nothing here is API: libpoolkit-pg exports only pg.h. */
#ifndef POOLKIT_PG_INT_H
#define POOLKIT_PG_INT_H

#include <poolkit/hist.h>
#include <poolkit/pg.h>

#include <libpq-fe.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Prepared statement names the adapter makes: "pk_s" and a number. The
 * full reset keeps these (and init's); it deallocates every other. */
#define PK__PG_STMT_PREFIX "pk_s"

/* ---- conn.c: one connection --------------------------------------------- */

enum pk__pg_stmt_state {
    PK__PG_STMT_FREE = 0,
    PK__PG_STMT_SEEN,  /* run once, unnamed; prepared on its next use */
    PK__PG_STMT_READY, /* prepared on the server as pk_s<id> */
    PK__PG_STMT_STALE  /* prepared, but its plan is invalid (the table
                          changed inside a transaction): deallocated at the
                          next chance, run unnamed until then */
};

struct pk__pg_stmt {
    int state;     /* enum pk__pg_stmt_state */
    unsigned uses; /* since it came into the cache */
    unsigned id;   /* the name's number, while READY or STALE */
    uint64_t hash; /* of sql */
    uint64_t used; /* the connection's use clock at the last use (LRU) */
    char *sql;     /* owned copy; NULL when FREE */
};

/* The core's resource: one connection and what the adapter keeps with it.
 * Only the thread holding its lease (or the core's hook, which holds it
 * too) touches it. */
struct pk__pg_conn {
    PGconn *conn;
    pk_pg_pool *pool; /* the pool it belongs to (pk_pg_query needs it) */
    void *ctx;     /* the init hook's, the user's */
    int doomed;    /* a connection-class error was seen: release BROKEN */
    int ncache;    /* slots in cache (0: the statement cache is off) */
    struct pk__pg_stmt *cache;
    uint64_t clock;  /* statement uses so far */
    unsigned next_id;
    int nstale;      /* STALE slots */
    char *reset_sql; /* the full reset for this connection: the pool's,
                        plus the names init prepared (to keep); owned,
                        NULL: the pool's */
};

/* pk_error_set with libpq's (multi-line) message on one line. */
int pk__pg_set_error(pk_error *err, int code, int sys, const char *prefix,
                     const char *msg);
int pk__pg_pack_sqlstate(const char *s); /* 0 for NULL or not 5 chars */
/* Reads results until libpq has none left, the connection fails, or the
 * deadline, flushing what is still to send. Keeps the first failed
 * result, else the last one, in *keep (NULL: everything is cleared).
 * Returns 1 done, 0 deadline (the connection stays busy), -1 connection
 * failure. */
int pk__pg_read(PGconn *c, uint64_t deadline, PGresult **keep);
int pk__pg_failed(const PGresult *r); /* NULL counts as failed */
/* Runs sql (simple protocol, several statements allowed) and reads every
 * result by the deadline. Returns 0 when all succeeded, with the last
 * result in *last when last is not NULL (the caller PQclears it); on
 * failure, when err is not NULL, fills it with the first failure. A
 * timeout leaves the connection busy. */
int pk__pg_run(PGconn *c, const char *sql, uint64_t deadline,
               PGresult **last, pk_error *err);

struct pk__pg_conn *pk__pg_conn_new(pk_pg_pool *pool, PGconn *c, int ncache);
/* Frees the record, not the PGconn. */
void pk__pg_conn_free(struct pk__pg_conn *pc);
/* The cached statement for sql, or NULL. */
struct pk__pg_stmt *pk__pg_stmt_find(struct pk__pg_conn *pc, const char *sql);
/* Marks a use of s (for LRU and the prepare on second use). */
void pk__pg_stmt_touch(struct pk__pg_conn *pc, struct pk__pg_stmt *s);
/* Takes a slot for sql, SEEN with one use: a free one, else the least
 * recently used (if that one was prepared, *evicted is set to 1 and
 * *evicted_id to its number: the caller deallocates it). NULL when every
 * slot is STALE or out of memory. */
struct pk__pg_stmt *pk__pg_stmt_add(struct pk__pg_conn *pc, const char *sql,
                                    int *evicted, unsigned *evicted_id);
/* Forgets every cached statement (after a reset the adapter cannot see
 * into). */
void pk__pg_stmt_forget_all(struct pk__pg_conn *pc);
/* A READY statement the server rejected: deallocated at the next chance. */
void pk__pg_stmt_mark_stale(struct pk__pg_conn *pc, struct pk__pg_stmt *s);
int pk__pg_stmt_has_stale(const struct pk__pg_conn *pc);
/* "DEALLOCATE pk_s<id>; ..." for each STALE statement, those slots freed;
 * NULL if none (or out of memory: then nothing is freed). Owned. */
char *pk__pg_stmt_take_stale(struct pk__pg_conn *pc);

/* ---- pool.c: the pool ----------------------------------------------------- */

/* Counters the helpers of query.c bump, and stats report. */
struct pk__pg_counts {
    _Atomic uint64_t connects_ok, connects_failed;
    _Atomic uint64_t checks_failed;
    _Atomic uint64_t resets_rollback, resets_full, resets_custom,
        resets_failed;
    _Atomic uint64_t queries_cancelled;
    _Atomic uint64_t leaks_suspected;
    _Atomic uint64_t statements_prepared;
};

struct pk_pg_pool {
    unsigned magic;
    pk_pool *core;
    char *conninfo;
    char *init_sql;       /* NULL: none */
    char *reset_sql;      /* the reset's statements: FULL's (for a
                             connection init made no statements on) or
                             CUSTOM's; NULL for ROLLBACK */
    pk_pg_init_fn init;
    pk_pg_fini_fn fini;
    void *init_user;
    pk_event_fn event;    /* the user's */
    void *event_user;
    int connect_timeout_ms; /* PK_NEVER: none */
    int reset_timeout_ms;
    int reset;            /* enum pk_pg_reset, after the PgBouncer switch */
    int check_query;
    int require_writable;
    int pgbouncer;
    int statement_cache;  /* slots per connection; 0: off */
    pthread_mutex_t mu;
    pthread_condattr_t cv_attr; /* CLOCK_MONOTONIC, for waiters' cvs */
    struct pk__pg_waiter *waiters; /* mu: threads waiting on a ticket */
    uint64_t fail_seq;    /* mu: failed connects so far */
    pk_error last_fail;   /* mu: the latest one */
    struct pk__pg_counts n;
    pk_hist *connect_us;  /* successful connects' time */
};

/* Is a pk_pg_pool (magic set). */
int pk__pg_valid(const pk_pg_pool *pool);
/* The release status the connection earns after its last result (NULL:
 * none): BROKEN when the connection is not OK or last failed with a
 * connection-class SQLSTATE (or 25006 with require_writable), else OK.
 * Marks pc doomed when BROKEN. */
int pk__pg_status_after(pk_pg_pool *pool, struct pk__pg_conn *pc,
                        const PGresult *last);

#endif /* POOLKIT_PG_INT_H */
