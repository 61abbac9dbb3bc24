/* peer_pg_zdb.c - libzdb's ConnectionPool (Debian libzdb-dev) driven like
 * bench_pg (bench/bench_pg.c), for the pg bench of issue #12.
 *
 *   peer_pg_zdb overhead <conninfo> <threads> <n>
 *       pair_ns= agg_ns= n= threads=
 *   peer_pg_zdb contend <conninfo> <threads> <pool> <ms> <retry_us>
 *       qps= fair= queries= min_thread= max_thread= wait_p50_ns=
 *       wait_p99_ns= wait_max_ns= ...
 *
 * The conninfo is libpq's; it is turned into libzdb's URL
 * (postgresql://host:port/db?user=..., with unix-socket=<dir> when host is
 * a directory). The pool is started with initialConnections = maxConnections
 * = 4 (overhead) or <pool> (contend), no reaper.
 *
 * Acquire is ConnectionPool_getConnection, release Connection_close (which
 * rolls back an open transaction, then clears the connection's statements
 * and results locally: no round trip when none is open). The query is
 * Connection_executeQuery("SELECT 1") and ResultSet_next. libzdb does not
 * wait: getConnection returns NULL at once when all connections are out
 * (and its "ping" reads PQstatus only). A user waits at the cap with a
 * retry loop; this one sleeps <retry_us> between tries, timed as one
 * acquire (wait_* keys). The timing loops are peer_pg_common.h's, the
 * same code that times poolkit. */
#include "peer_pg_common.h"

#include <zdb.h> /* URL, ConnectionPool, Connection, ResultSet */

#include <ctype.h>

struct zdb_ctx {
    ConnectionPool_T pool;
    int64_t retry_ns;
};

struct zdb_ts {
    Connection_T con;
};

static void *
zdb_thread_init(void *ctx, int index)
{
    (void)ctx;
    (void)index;
    return calloc(1, sizeof(struct zdb_ts));
}

static void
zdb_thread_fini(void *ctx, void *ts)
{
    (void)ctx;
    free(ts);
}

static int
zdb_acquire(void *ctx, void *ts)
{
    struct zdb_ctx *c = ctx;
    struct zdb_ts *t = ts;
    while (!(t->con = ConnectionPool_getConnection(c->pool)))
        if (c->retry_ns > 0)
            pgb_sleep_ns(c->retry_ns);
    return 0;
}

static int
zdb_query(void *ctx, void *ts)
{
    struct zdb_ts *t = ts;
    (void)ctx;
    ResultSet_T r = Connection_executeQuery(t->con, "SELECT 1");
    if (!ResultSet_next(r) || ResultSet_getInt(r, 1) != 1) {
        fprintf(stderr, "peer_pg_zdb: SELECT 1 returned no 1\n");
        return -1;
    }
    return 0;
}

static void
zdb_release(void *ctx, void *ts)
{
    struct zdb_ts *t = ts;
    (void)ctx;
    Connection_close(t->con);
    t->con = NULL;
}

/* libzdb's URL from a libpq conninfo. Values must not need escaping.
 * libzdb refuses a URL without a password: without one in the conninfo
 * it gets "unused", which a trust server never asks for. */
static URL_T
url_from_conninfo(const char *conninfo)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    if (!opts) {
        fprintf(stderr, "peer_pg_zdb: conninfo: %s", msg ? msg : "?\n");
        exit(2);
    }
    const char *host = NULL, *port = NULL, *user = NULL, *pw = NULL,
               *db = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        for (const char *s = o->val; *s; s++)
            if (!isalnum((unsigned char)*s) && !strchr("/._-", *s) &&
                strcmp(o->keyword, "password") != 0) {
                fprintf(stderr, "peer_pg_zdb: %s=%s needs escaping in a "
                        "libzdb URL; not supported\n", o->keyword, o->val);
                exit(2);
            }
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "port"))
            port = o->val;
        else if (!strcmp(o->keyword, "user"))
            user = o->val;
        else if (!strcmp(o->keyword, "password"))
            pw = o->val;
        else if (!strcmp(o->keyword, "dbname"))
            db = o->val;
        else if (strcmp(o->keyword, "client_encoding") != 0) {
            fprintf(stderr, "peer_pg_zdb: conninfo keyword %s not "
                    "supported\n", o->keyword);
            exit(2);
        }
    }
    char url[1024];
    int unix_dir = host && host[0] == '/';
    /* With unix-socket, libzdb passes no port to libpq, which then takes
     * PGPORT (else 5432). */
    if (unix_dir && port)
        setenv("PGPORT", port, 1);
    snprintf(url, sizeof url, "postgresql://%s%s%s/%s?user=%s%s%s%s%s",
             unix_dir || !host ? "localhost" : host, port ? ":" : "",
             port ? port : "", db ? db : (user ? user : "postgres"),
             user ? user : "postgres", "&password=", pw ? pw : "unused",
             unix_dir ? "&unix-socket=" : "", unix_dir ? host : "");
    PQconninfoFree(opts);
    PQfreemem(msg);
    URL_T u = URL_new(url);
    if (!u) {
        fprintf(stderr, "peer_pg_zdb: libzdb cannot parse %s\n", url);
        exit(1);
    }
    return u;
}

static long
num(const char *s)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end != '\0' || v < 0) {
        fprintf(stderr, "usage: peer_pg_zdb overhead <conninfo> <threads> "
                "<n>\n       peer_pg_zdb contend <conninfo> <threads> "
                "<pool> <ms> <retry_us>\n");
        exit(2);
    }
    return v;
}

int
main(int argc, char **argv)
{
    int over = argc == 5 && !strcmp(argv[1], "overhead");
    int cont = argc == 7 && !strcmp(argv[1], "contend");
    if (!over && !cont) {
        num("");
        return 2;
    }
    int threads = (int)num(argv[3]);
    int size = over ? 4 : (int)num(argv[4]);
    if (threads < 1 || size < 1)
        num("");
    URL_T url = url_from_conninfo(argv[2]);
    struct zdb_ctx c = { .pool = ConnectionPool_new(url) };
    ConnectionPool_setInitialConnections(c.pool, size);
    ConnectionPool_setMaxConnections(c.pool, size);
    ConnectionPool_start(c.pool);
    struct pgb_ops ops = { .ctx = &c, .thread_init = zdb_thread_init,
                           .thread_fini = zdb_thread_fini,
                           .acquire = zdb_acquire, .query = zdb_query,
                           .release = zdb_release };
    if (over) {
        long n = num(argv[4]);
        pgb_overhead(&ops, threads, n);
        printf(" n=%ld threads=%d\n", n, threads);
    } else {
        int ms = (int)num(argv[5]);
        c.retry_ns = num(argv[6]) * 1000;
        pgb_contend(&ops, threads, ms, 1);
        printf(" threads=%d pool=%d ms=%d retry_us=%s\n", threads, size, ms,
               argv[6]);
    }
    ConnectionPool_stop(c.pool);
    ConnectionPool_free(&c.pool);
    URL_free(&url);
    return 0;
}
