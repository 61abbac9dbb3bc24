/* examples/demo_pg.c - poolkit-demo's PostgreSQL rows.
 *
 *   pg-unix  a query on a connection made for it (PQconnectdb, PQexec of
 *            "SELECT 1", PQfinish) vs the same query on a pooled
 *            connection (pk_pg_exec), over the server's unix socket
 *   pg-tcp   the same over TCP, without TLS (sslmode=disable)
 *   pg-tls   the same over TCP with TLS (sslmode=require): a new
 *            connection pays for the handshake too
 *
 * The server is PK_PG_CONNINFO's when it is set (only the rows of its
 * transport run: a unix socket, or TCP with and without TLS), else a
 * throwaway cluster (examples/support/throwaway_pg.c) that the first pg
 * row starts and demo_pg_finish removes after the last row; a guard
 * process removes it if the demo ends any other way (Ctrl-C).
 *
 * The pool is the one a single-threaded program would make: one
 * connection (max_size 1), reset PK_PG_RESET_ROLLBACK, since SELECT 1
 * leaves no session state behind. The default full reset would add a
 * round trip to every pooled query (see the note the row prints under
 * the table).
 *
 * Built without libpq (the Makefile compiles this file with -DPK_DEMO_PG
 * only when the pg adapter builds), the rows say skipped and how to get
 * them. */
#include "demo_rows.h"

#ifdef PK_DEMO_PG

#include <libpq-fe.h>
#include <poolkit/pg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/throwaway_pg.h"

#define QUERY_MS 10000 /* no demo query comes near it */

enum transport { T_UNIX, T_TCP, T_TLS };

/* The server, found by the first pg row and kept for the others. Only
 * the demo's main thread touches it. */
static struct {
    int looked;              /* server_find ran */
    int ok;                  /* a server is there */
    int skip;                /* none is: skip with why */
    char why[256];           /* not ok: why (a skip) or what failed */
    int from_env;            /* PK_PG_CONNINFO's server */
    enum transport env_kind; /* its transport: T_UNIX or T_TCP */
    char env_ci[1024];       /* PK_PG_CONNINFO as keyword='value' pairs */
    int env_tls;             /* PK_PG_CONNINFO asks for TLS itself */
    struct throwaway_pg pg;  /* else the throwaway cluster */
    int noted;               /* a row's note names the server already */
} srv;

/* Appends " key='value'" to buf (libpq's quoting: \ and ' escaped).
 * Returns 0, or -1 when buf is too small. */
static int
ci_append(char *buf, size_t n, const char *key, const char *val)
{
    size_t len = strlen(buf);

    if (len + strlen(key) + 4 >= n)
        return -1;
    len += (size_t)snprintf(buf + len, n - len, " %s='", key);
    for (; *val; val++) {
        if (len + 4 >= n)
            return -1;
        if (*val == '\\' || *val == '\'')
            buf[len++] = '\\';
        buf[len++] = *val;
    }
    buf[len++] = '\'';
    buf[len] = '\0';
    return 0;
}

/* Is host (a libpq host list, or NULL/"" for the default) a unix socket?
 * The first host decides. */
static int
host_is_unix(const char *host)
{
    return !host || !*host || *host == '/' || *host == '@' || *host == ',';
}

/* PK_PG_CONNINFO (a conninfo or a URI) rewritten as keyword='value'
 * pairs, so that the rows can append sslmode. Returns 0, or -1 with
 * srv.why set. */
static int
env_parse(const char *env)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(env, &msg);
    const char *host = NULL, *hostaddr = NULL;

    if (!opts) {
        snprintf(srv.why, sizeof srv.why, "PK_PG_CONNINFO: %s",
                 msg ? msg : "out of memory");
        srv.why[strcspn(srv.why, "\n")] = '\0';
        PQfreemem(msg);
        return -1;
    }
    srv.env_ci[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (ci_append(srv.env_ci, sizeof srv.env_ci, o->keyword, o->val)) {
            snprintf(srv.why, sizeof srv.why, "PK_PG_CONNINFO is too long");
            PQconninfoFree(opts);
            return -1;
        }
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "sslmode") == 0)
            srv.env_tls = strcmp(o->val, "require") == 0 ||
                          strncmp(o->val, "verify-", 7) == 0;
    }
    /* Unset, libpq falls back on the environment, then on its socket. */
    if (!host && !hostaddr) {
        host = getenv("PGHOST");
        hostaddr = getenv("PGHOSTADDR");
    }
    srv.env_kind = (hostaddr && *hostaddr) || !host_is_unix(host) ? T_TCP
                                                                  : T_UNIX;
    PQconninfoFree(opts);
    return 0;
}

/* Finds the server once: PK_PG_CONNINFO, or a throwaway cluster. */
static void
server_find(void)
{
    const char *env = getenv("PK_PG_CONNINFO");
    char why[160];
    int rc;

    srv.looked = 1;
    if (env && *env) {
        srv.from_env = 1;
        srv.ok = env_parse(env) == 0;
        return;
    }
    rc = throwaway_pg_start(&srv.pg, why, sizeof why);
    srv.ok = rc == THROWAWAY_PG_OK;
    if (rc == THROWAWAY_PG_ABSENT) {
        /* libpq is here (this file was built): pg_server.sh's message
         * names the package still missing. */
        snprintf(srv.why, sizeof srv.why, "%s, or set PK_PG_CONNINFO",
                 why[0] ? why : "PostgreSQL not found (apt-get install "
                                "postgresql)");
        srv.skip = 1;
    } else if (rc != THROWAWAY_PG_OK) {
        snprintf(srv.why, sizeof srv.why, "starting a throwaway cluster: %s",
                 why);
    }
}

void
demo_pg_finish(void)
{
    if (srv.looked && !srv.from_env && srv.ok)
        throwaway_pg_stop(&srv.pg);
    srv.ok = 0;
}

/* The conninfo of transport t into buf. Returns 0, or 1 with out
 * skipped when this server has no such transport. */
static int
conninfo(enum transport t, char *buf, size_t n, struct demo_result *out)
{
    static const char *const ssl[] = { "", " sslmode=disable",
                                       " sslmode=require" };

    if (srv.from_env) {
        if ((t == T_UNIX) != (srv.env_kind == T_UNIX)) {
            out->skipped = 1;
            demo_note(out, "PK_PG_CONNINFO names a server on %s",
                      srv.env_kind == T_UNIX ? "a unix socket" : "TCP");
            return 1;
        }
        /* A TLS row keeps the caller's verify-* mode. */
        snprintf(buf, n, "%s%s", srv.env_ci,
                 t == T_TLS && srv.env_tls ? "" : ssl[t]);
        return 0;
    }
    if (t == T_TLS && !srv.pg.tls) {
        out->skipped = 1;
        demo_note(out, "the throwaway cluster serves no TLS: %s",
                  srv.pg.no_tls[0] ? srv.pg.no_tls
                                   : "see tests/support/pg_server.sh");
        return 1;
    }
    snprintf(buf, n, "host=%s port=%d user=postgres dbname=postgres "
             "connect_timeout=10%s",
             t == T_UNIX ? srv.pg.t.dir : "127.0.0.1", srv.pg.port, ssl[t]);
    return 0;
}

/* libpq's message on one line: each run of white space (newlines, the
 * tab of a hint) becomes one space, none at the end. */
static const char *
one_line(char *buf, size_t n, const char *msg)
{
    size_t len = 0;

    for (; *msg && len + 1 < n; msg++) {
        int space = *msg == ' ' || *msg == '\n' || *msg == '\t';
        if (!space)
            buf[len++] = *msg;
        else if (len > 0 && buf[len - 1] != ' ')
            buf[len++] = ' ';
    }
    while (len > 0 && buf[len - 1] == ' ')
        len--;
    buf[len] = '\0';
    return buf;
}

struct pg_row {
    enum transport t;
    char ci[1200];
    pk_pg_pool *pool;
    struct demo_result *out;
};

/* One query's answer must be one row holding 1; res is cleared. */
static int
check_one(struct pg_row *r, PGresult *res, const char *how)
{
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
             strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    char line[200];

    if (!ok)
        demo_note(r->out, "%s: %s", how,
                  PQresultStatus(res) == PGRES_TUPLES_OK
                      ? "SELECT 1 did not answer 1"
                      : one_line(line, sizeof line,
                                 PQresultErrorMessage(res)));
    PQclear(res);
    return ok ? 0 : -1;
}

/* A connection of the row's transport (TLS exactly when the row says so),
 * or NULL with the row's note set. */
static PGconn *
connect_row(struct pg_row *r)
{
    PGconn *c = PQconnectdb(r->ci);
    char line[200];

    if (PQstatus(c) != CONNECTION_OK) {
        demo_note(r->out, "PQconnectdb: %s",
                  one_line(line, sizeof line, PQerrorMessage(c)));
        PQfinish(c);
        return NULL;
    }
    if (PQsslInUse(c) != (r->t == T_TLS)) {
        demo_note(r->out, "the connection %s TLS", PQsslInUse(c) ? "uses"
                                                                 : "lacks");
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int
pg_per_use(void *arg)
{
    struct pg_row *r = arg;
    PGconn *c = connect_row(r);
    int rc;

    if (!c)
        return -1;
    rc = check_one(r, PQexec(c, "SELECT 1"), "PQexec");
    PQfinish(c);
    return rc;
}

static int
pg_pooled(void *arg)
{
    struct pg_row *r = arg;
    PGresult *res;
    pk_error err;
    int rc;

    err.msg[0] = '\0';
    rc = pk_pg_exec(r->pool, "SELECT 1", 0, NULL, QUERY_MS, &res, &err);
    if (rc) {
        demo_note(r->out, "pk_pg_exec: %s%s%s", pk_strerror(rc),
                  err.msg[0] ? ": " : "", err.msg);
        return -1;
    }
    return check_one(r, res, "pk_pg_exec");
}

/* The first connection: says whether the row can run at all, and which
 * server it is (for the note under the table). Returns 0, 1 (out
 * skipped), or -1 (failed, out's note says why). */
static int
first_connect(struct pg_row *r, char *version, size_t n)
{
    PGconn *c = connect_row(r);
    const char *v;

    if (!c) {
        /* A server without TLS, or a libpq without it, is a skip. */
        if (r->t == T_TLS && strstr(r->out->note, "SSL")) {
            r->out->skipped = 1;
            return 1;
        }
        return -1;
    }
    v = PQparameterStatus(c, "server_version");
    snprintf(version, n, "%s", v ? v : "?");
    PQfinish(c);
    return 0;
}

static int
pg_row_run(struct demo_ctx *ctx, struct demo_result *out, enum transport t)
{
    static struct pg_row r; /* the conninfo: keep it off the stack */
    char version[64];
    pk_error err;
    int rc;

    if (!srv.looked)
        server_find();
    if (!srv.ok) {
        out->skipped = srv.skip;
        demo_note(out, "%s", srv.why);
        return srv.skip ? 0 : -1;
    }
    memset(&r, 0, sizeof r);
    r.t = t;
    r.out = out;
    if (conninfo(t, r.ci, sizeof r.ci, out))
        return 0;
    rc = first_connect(&r, version, sizeof version);
    if (rc)
        return rc > 0 ? 0 : -1;
    rc = pk_pg_pool_create(&r.pool, &(pk_pg_options){
                               .conninfo = r.ci, .max_size = 1,
                               .reset = PK_PG_RESET_ROLLBACK }, &err);
    if (rc) {
        demo_note(out, "pk_pg_pool_create: %s: %s", pk_strerror(rc),
                  err.msg);
        return -1;
    }
    demo_setup_done(ctx); /* the server's start is not the row's time */
    rc = demo_measure(ctx, &(struct demo_pair){ pg_per_use, pg_pooled, &r },
                      out);
    pk_pg_pool_destroy(r.pool);
    if (rc == 0 && !srv.noted) {
        demo_note(out, "PostgreSQL %s, %s; pooled: pk_pg_exec on a pool "
                  "of 1, reset PK_PG_RESET_ROLLBACK (no full-reset round trip)",
                  version, srv.from_env ? "PK_PG_CONNINFO"
                                        : "a throwaway cluster on this "
                                          "machine");
        srv.noted = 1;
    }
    return rc;
}

int
demo_row_pg_unix(struct demo_ctx *ctx, struct demo_result *out)
{
    return pg_row_run(ctx, out, T_UNIX);
}

int
demo_row_pg_tcp(struct demo_ctx *ctx, struct demo_result *out)
{
    return pg_row_run(ctx, out, T_TCP);
}

int
demo_row_pg_tls(struct demo_ctx *ctx, struct demo_result *out)
{
    return pg_row_run(ctx, out, T_TLS);
}

#else /* !PK_DEMO_PG: built without libpq */

static int
pg_skipped(struct demo_ctx *ctx, struct demo_result *out)
{
    (void)ctx;
    out->skipped = 1;
    demo_note(out, "poolkit-demo was built without libpq (the pg adapter "
              "was off): apt-get install postgresql libpq-dev, then make "
              "demo");
    return 0;
}

int
demo_row_pg_unix(struct demo_ctx *ctx, struct demo_result *out)
{
    return pg_skipped(ctx, out);
}

int
demo_row_pg_tcp(struct demo_ctx *ctx, struct demo_result *out)
{
    return pg_skipped(ctx, out);
}

int
demo_row_pg_tls(struct demo_ctx *ctx, struct demo_result *out)
{
    return pg_skipped(ctx, out);
}

void
demo_pg_finish(void)
{
}

#endif /* PK_DEMO_PG */
