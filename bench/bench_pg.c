/* bench/bench_pg.c - poolkit's PostgreSQL pool (issue #12), driven like
 * the pg peer drivers in bench/peers/ so bench/run.sh can interleave it
 * with them and read every program the same way. Every case takes a libpq
 * conninfo and prints one line of key=value pairs on stdout.
 *
 *   bench_pg probe <conninfo>           ok=1 ssl=0|1, or skip=<why>
 *   bench_pg select1 <conninfo> <n>     ns_per_q= held_ns= n=
 *   bench_pg connect <conninfo> <n>     ns_per_q= n=
 *   bench_pg overhead <conninfo> <threads> <n> rollback|nowait|full|check
 *                                       pair_ns= agg_ns= select1_ns=
 *                                       frac_pct= n= threads=
 *   bench_pg contend <conninfo> <threads> <pool> <ms> acquire|exec|perconn
 *                                       qps= fair= queries= ...
 *   bench_pg recovery <conninfo> <exec_timeout_ms> <cmd> [args...]
 *                                       recovery_ms= down_ms= ...
 *
 *   select1   pooled: n x pk_pg_exec("SELECT 1") on one thread, after 100
 *             untimed; pool of 4 (min_size 4), reset mode rollback. Then
 *             held_ns: n x PQexec("SELECT 1") on one connection held from
 *             that pool (the query without the pool's path).
 *   connect   what the pool saves: n x (PQconnectdb, PQexec("SELECT 1"),
 *             PQfinish), after 2 untimed.
 *   overhead  acquire + release, no query, on `threads` threads of a
 *             pool of 4 made full at create (min_size 4), connections idle
 *             far less than check_after: pk_pg_acquire (timeout 10 s) +
 *             pk_pg_release(OK). Modes: rollback (PK_PG_RESET_ROLLBACK, no
 *             transaction open: no round trip), nowait (rollback, but
 *             pk_pg_acquire with timeout 0: the core's direct path, no
 *             ticket; what waiting costs when nobody waits), full (the
 *             default reset: DISCARD ALL on every release), check
 *             (rollback, and check_after_ms = PK_ALWAYS: the liveness
 *             check on every acquire). pair_ns: per thread (its loop's time / n, averaged
 *             over the threads: what a query on that thread pays);
 *             agg_ns: wall time / all pairs. Then select1_ns: 2000 PQexec
 *             SELECT 1 on one held connection (after 200 untimed), and
 *             frac_pct = 100 * pair_ns / select1_ns.
 *   contend   `threads` threads share a pool of `pool` connections, each
 *             looping acquire, SELECT 1, release (peer_pg_common.h,
 *             pgb_contend): acquire = pk_pg_acquire (timed) + PQexec +
 *             pk_pg_release; exec = pk_pg_exec (nothing to time around
 *             the acquire); perconn = no pool: each thread its own
 *             PGconn (the PgBouncer peer: conninfo points at PgBouncer).
 *             The pool is reset mode rollback, min_size = pool.
 *   recovery  a pool of 4 (default options otherwise) is filled, then
 *             `cmd` (pg_server.sh restart DIR) runs while this thread
 *             loops pk_pg_exec("SELECT 1", exec_timeout_ms) (after a
 *             failure that came back in under 1 ms it sleeps 1 ms). Once
 *             an exec has failed, a second thread PQpings the server every
 *             millisecond until one succeeds. recovery_ms: from the start
 *             of that first successful ping to the return of the first
 *             successful exec (negative: the pool was back first; the ping
 *             itself takes ping_ms). Then 200 more execs: failures_after
 *             counts failed ones (stale connections lent after recovery).
 *
 * A bad command line exits 2, a failed run 1 (the reason on stderr). */
#include "peers/peer_pg_common.h"

#include <poolkit/pg.h>
#include <poolkit/pool.h>

#include <errno.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define EXEC_TIMEOUT_MS 10000
#define SELECT1_WARMUP 100
#define CONNECT_WARMUP 2
#define SELECT1_REF_N 2000
#define SELECT1_REF_WARMUP 200
#define OVERHEAD_POOL 4
#define RECOVERY_POOL 4
#define RECOVERY_AFTER 200
/* How long the recovery case waits for the outage and then for the
 * server's return before it fails. */
#define RECOVERY_LIMIT_NS (60 * 1000000000LL)

static _Noreturn void
die_pk(const char *what, int rc, const pk_error *e)
{
    fprintf(stderr, "bench_pg: %s failed: %s%s%s\n", what, pk_strerror(rc),
            e && e->msg[0] ? ": " : "", e ? e->msg : "");
    exit(1);
}

/* A pool of `size` connections (min_size: 0 or size), every connection
 * made and idle when it returns. */
static pk_pg_pool *
make_pool(const char *conninfo, size_t size, size_t min_size, int reset,
          int check_after_ms)
{
    if (size > PGB_THREADS_MAX)
        pgb_die("bench_pg: pool too large");
    pk_pg_options o = { .conninfo = conninfo, .min_size = min_size,
                        .max_size = size, .reset = reset,
                        .check_after_ms = check_after_ms };
    pk_error e = { 0, 0, "" };
    pk_pg_pool *p = NULL;
    int rc = pk_pg_pool_create(&p, &o, &e);
    if (rc)
        die_pk("pk_pg_pool_create", rc, &e);
    /* min_size connections are made at create, but a failed one is only
     * retried in the background: borrow them all once so a dead server
     * fails the run here, and every connection exists before timing. */
    pk_pg_lease l[PGB_THREADS_MAX];
    for (size_t i = 0; i < size; i++) {
        rc = pk_pg_acquire(p, &l[i], EXEC_TIMEOUT_MS, &e);
        if (rc)
            die_pk("pk_pg_acquire (filling the pool)", rc, &e);
    }
    for (size_t i = 0; i < size; i++)
        pk_pg_release(p, &l[i], PK_RELEASE_OK);
    return p;
}

static void
exec_select1(pk_pg_pool *p)
{
    PGresult *r = NULL;
    pk_error e = { 0, 0, "" };
    int rc = pk_pg_exec(p, "SELECT 1", 0, NULL, EXEC_TIMEOUT_MS, &r, &e);
    if (rc)
        die_pk("pk_pg_exec", rc, &e);
    PQclear(r);
}

/* ---- probe, select1, connect ---------------------------------------------- */

static void
run_probe(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        /* First line of libpq's message only. */
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        msg[strcspn(msg, "\n")] = '\0';
        printf("skip=%s\n", msg[0] ? msg : "connect failed");
    } else {
        printf("ok=1 ssl=%d\n", PQsslInUse(c));
    }
    PQfinish(c);
}

static void
run_select1(const char *conninfo, long n)
{
    pk_pg_pool *p = make_pool(conninfo, OVERHEAD_POOL, OVERHEAD_POOL,
                              PK_PG_RESET_ROLLBACK, 0);
    for (int i = 0; i < SELECT1_WARMUP; i++)
        exec_select1(p);
    int64_t t0 = pgb_now_ns();
    for (long i = 0; i < n; i++)
        exec_select1(p);
    int64_t t1 = pgb_now_ns();
    /* The same queries with PQexec on one held connection: the query
     * alone, without the pool's path. */
    pk_pg_lease l;
    pk_error e = { 0, 0, "" };
    int rc = pk_pg_acquire(p, &l, EXEC_TIMEOUT_MS, &e);
    if (rc)
        die_pk("pk_pg_acquire", rc, &e);
    for (int i = 0; i < SELECT1_WARMUP; i++)
        if (pgb_select1(l.conn) != 0)
            exit(1);
    int64_t h0 = pgb_now_ns();
    for (long i = 0; i < n; i++)
        if (pgb_select1(l.conn) != 0)
            exit(1);
    int64_t h1 = pgb_now_ns();
    pk_pg_release(p, &l, PK_RELEASE_OK);
    pk_pg_pool_destroy(p);
    printf("ns_per_q=%.0f held_ns=%.0f n=%ld\n", (double)(t1 - t0) / (double)n,
           (double)(h1 - h0) / (double)n, n);
}

static void
connect_query(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_pg: PQconnectdb: %s", PQerrorMessage(c));
        exit(1);
    }
    if (pgb_select1(c) != 0)
        exit(1);
    PQfinish(c);
}

static void
run_connect(const char *conninfo, long n)
{
    for (int i = 0; i < CONNECT_WARMUP; i++)
        connect_query(conninfo);
    int64_t t0 = pgb_now_ns();
    for (long i = 0; i < n; i++)
        connect_query(conninfo);
    int64_t t1 = pgb_now_ns();
    printf("ns_per_q=%.0f n=%ld\n", (double)(t1 - t0) / (double)n, n);
}

/* ---- the pool behind pgb_ops ---------------------------------------------- */

struct pk_ctx {
    pk_pg_pool *pool;
    const char *conninfo; /* perconn */
    int exec;             /* contend exec: pk_pg_exec is the whole loop */
    int nowait;           /* overhead nowait: acquire with timeout 0 */
};

struct pk_ts {
    pk_pg_lease lease;
    PGconn *own;         /* perconn */
};

static void *
pk_thread_init(void *ctx, int index)
{
    struct pk_ctx *c = ctx;
    (void)index;
    struct pk_ts *t = calloc(1, sizeof *t);
    if (t && c->conninfo) {
        t->own = PQconnectdb(c->conninfo);
        if (PQstatus(t->own) != CONNECTION_OK) {
            fprintf(stderr, "bench_pg: PQconnectdb: %s",
                    PQerrorMessage(t->own));
            PQfinish(t->own);
            free(t);
            return NULL;
        }
    }
    return t;
}

static void
pk_thread_fini(void *ctx, void *ts)
{
    struct pk_ts *t = ts;
    (void)ctx;
    if (t->own)
        PQfinish(t->own);
    free(t);
}

static int
pk_acquire(void *ctx, void *ts)
{
    struct pk_ctx *c = ctx;
    struct pk_ts *t = ts;
    if (t->own || c->exec)
        return 0;
    pk_error e = { 0, 0, "" };
    int rc = pk_pg_acquire(c->pool, &t->lease,
                           c->nowait ? 0 : EXEC_TIMEOUT_MS, &e);
    if (rc)
        fprintf(stderr, "bench_pg: pk_pg_acquire: %s: %s\n", pk_strerror(rc),
                e.msg);
    return rc ? -1 : 0;
}

static int
pk_query(void *ctx, void *ts)
{
    struct pk_ctx *c = ctx;
    struct pk_ts *t = ts;
    if (t->own)
        return pgb_select1(t->own);
    if (!c->exec)
        return pgb_select1(t->lease.conn);
    PGresult *r = NULL;
    pk_error e = { 0, 0, "" };
    int rc = pk_pg_exec(c->pool, "SELECT 1", 0, NULL, EXEC_TIMEOUT_MS, &r,
                        &e);
    if (rc)
        fprintf(stderr, "bench_pg: pk_pg_exec: %s: %s\n", pk_strerror(rc),
                e.msg);
    PQclear(r);
    return rc ? -1 : 0;
}

static void
pk_release(void *ctx, void *ts)
{
    struct pk_ctx *c = ctx;
    struct pk_ts *t = ts;
    if (t->own || c->exec)
        return;
    int rc = pk_pg_release(c->pool, &t->lease, PK_RELEASE_OK);
    if (rc)
        die_pk("pk_pg_release", rc, NULL);
}

static const struct pgb_ops pk_ops_proto = {
    .thread_init = pk_thread_init, .thread_fini = pk_thread_fini,
    .acquire = pk_acquire, .query = pk_query, .release = pk_release,
};

/* ---- overhead -------------------------------------------------------------- */

static void
run_overhead(const char *conninfo, int threads, long n, const char *mode)
{
    int reset = PK_PG_RESET_ROLLBACK, check_after = 0;
    if (!strcmp(mode, "full"))
        reset = PK_PG_RESET_FULL;
    else if (!strcmp(mode, "check"))
        check_after = PK_ALWAYS;
    else if (strcmp(mode, "rollback") != 0 && strcmp(mode, "nowait") != 0)
        pgb_die("bench_pg: overhead mode: rollback, nowait, full or check");

    struct pk_ctx c = { .pool = make_pool(conninfo, OVERHEAD_POOL,
                                          OVERHEAD_POOL, reset,
                                          check_after),
                        .nowait = !strcmp(mode, "nowait") };
    struct pgb_ops ops = pk_ops_proto;
    ops.ctx = &c;
    double pair = pgb_overhead(&ops, threads, n);

    /* What one SELECT 1 costs here, on a held connection, for frac_pct. */
    pk_pg_lease l;
    pk_error e = { 0, 0, "" };
    int rc = pk_pg_acquire(c.pool, &l, EXEC_TIMEOUT_MS, &e);
    if (rc)
        die_pk("pk_pg_acquire", rc, &e);
    for (int i = 0; i < SELECT1_REF_WARMUP; i++)
        if (pgb_select1(l.conn) != 0)
            exit(1);
    int64_t t0 = pgb_now_ns();
    for (int i = 0; i < SELECT1_REF_N; i++)
        if (pgb_select1(l.conn) != 0)
            exit(1);
    double q = (double)(pgb_now_ns() - t0) / SELECT1_REF_N;
    pk_pg_release(c.pool, &l, PK_RELEASE_OK);

    pk_pool_stats st;
    pk_pool_stats_get(pk_pg_pool_core(c.pool), &st);
    pk_pg_pool_destroy(c.pool);
    printf(" select1_ns=%.0f frac_pct=%.3f n=%ld threads=%d mode=%s "
           "created=%llu check_failures=%llu\n",
           q, 100.0 * pair / q, n, threads, mode,
           (unsigned long long)st.created,
           (unsigned long long)st.check_failures);
}

/* ---- contention ------------------------------------------------------------ */

static void
run_contend(const char *conninfo, int threads, int size, int ms,
            const char *mode)
{
    struct pk_ctx c = { 0 };
    int timed = 0;
    if (!strcmp(mode, "perconn")) {
        c.conninfo = conninfo;
    } else if (!strcmp(mode, "acquire") || !strcmp(mode, "exec")) {
        c.pool = make_pool(conninfo, (size_t)size, (size_t)size,
                           PK_PG_RESET_ROLLBACK, 0);
        c.exec = !strcmp(mode, "exec");
        timed = !c.exec;
    } else {
        pgb_die("bench_pg: contend mode: acquire, exec or perconn");
    }
    struct pgb_ops ops = pk_ops_proto;
    ops.ctx = &c;
    pgb_contend(&ops, threads, ms, timed);
    if (c.pool) {
        pk_pool_stats st;
        pk_pool_stats_get(pk_pg_pool_core(c.pool), &st);
        printf(" created=%llu", (unsigned long long)st.created);
        pk_pg_pool_destroy(c.pool);
    }
    printf(" threads=%d pool=%d ms=%d mode=%s\n", threads, size, ms, mode);
}

/* ---- recovery -------------------------------------------------------------- */

struct rec {
    const char *conninfo;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int down_seen; /* mu: an exec failed */
    int quit;      /* mu: give up */
    int64_t up_start, up_end; /* the first successful ping; 0: none yet */
    long pings;
};

static void *
pinger(void *arg)
{
    struct rec *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->down_seen && !r->quit)
        pthread_cond_wait(&r->cv, &r->mu);
    int quit = r->quit;
    pthread_mutex_unlock(&r->mu);
    int64_t limit = pgb_now_ns() + RECOVERY_LIMIT_NS;
    while (!quit && pgb_now_ns() < limit) {
        int64_t t0 = pgb_now_ns();
        PGPing p = PQping(r->conninfo);
        int64_t t1 = pgb_now_ns();
        pthread_mutex_lock(&r->mu);
        r->pings++;
        if (p == PQPING_OK) {
            r->up_start = t0;
            r->up_end = t1;
        }
        quit = r->quit;
        pthread_mutex_unlock(&r->mu);
        if (p == PQPING_OK)
            break;
        pgb_sleep_ns(1000000);
    }
    return NULL;
}

/* One pk_pg_exec("SELECT 1"); 0 or its code. Sleeps 1 ms after a failure
 * that came back in under 1 ms, as a retry loop would. */
static int
rec_exec(pk_pg_pool *p, int timeout_ms, int64_t *done, pk_error *e)
{
    PGresult *res = NULL;
    int64_t t0 = pgb_now_ns();
    int rc = pk_pg_exec(p, "SELECT 1", 0, NULL, timeout_ms, &res, e);
    *done = pgb_now_ns();
    PQclear(res);
    if (rc && *done - t0 < 1000000)
        pgb_sleep_ns(1000000);
    return rc;
}

static void
run_recovery(const char *conninfo, int timeout_ms, char **cmd)
{
    struct rec r = { .conninfo = conninfo };
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    pk_pg_pool *p = make_pool(conninfo, RECOVERY_POOL, 0, PK_PG_RESET_FULL,
                              0);
    pk_pool_stats before, after;
    pk_pool_stats_get(pk_pg_pool_core(p), &before);
    pthread_t ping;
    if (pthread_create(&ping, NULL, pinger, &r) != 0)
        pgb_die("bench_pg: pthread_create failed");

    /* The restart's stdout (pg_server.sh prints the conninfo) goes to our
     * stderr: stdout carries the one result line. */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, 2, 1);
    pid_t pid;
    int rc = posix_spawnp(&pid, cmd[0], &fa, NULL, cmd, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "bench_pg: cannot run %s: %s\n", cmd[0],
                strerror(rc));
        exit(1);
    }

    pk_error e = { 0, 0, "" };
    int64_t t_fail = 0, t_ok = 0, done, limit = pgb_now_ns() + RECOVERY_LIMIT_NS;
    long ok_before = 0, failed = 0;
    while ((rc = rec_exec(p, timeout_ms, &done, &e)) == 0) {
        ok_before++;
        if (done > limit)
            pgb_die("bench_pg: recovery: no failed query in 60 s (did the "
                    "server restart?)");
    }
    t_fail = done;
    char first_err[PK_ERROR_MSG_SIZE];
    snprintf(first_err, sizeof first_err, "%s", e.msg);
    pthread_mutex_lock(&r.mu);
    r.down_seen = 1;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    failed = 1;
    limit = pgb_now_ns() + RECOVERY_LIMIT_NS;
    while (rec_exec(p, timeout_ms, &done, &e) != 0) {
        failed++;
        if (done > limit)
            pgb_die("bench_pg: recovery: no successful query 60 s after the "
                    "outage");
    }
    t_ok = done;
    long after_fail = 0;
    for (int i = 0; i < RECOVERY_AFTER; i++)
        if (rec_exec(p, timeout_ms, &done, &e) != 0)
            after_fail++;

    pthread_join(ping, NULL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        pgb_die("bench_pg: recovery: the restart command failed");
    if (!r.up_start)
        pgb_die("bench_pg: recovery: the server never answered a ping");
    pk_pool_stats_get(pk_pg_pool_core(p), &after);
    pk_pg_pool_destroy(p);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);

    first_err[strcspn(first_err, " ")] = '\0'; /* one word for the line */
    printf("recovery_ms=%.1f down_ms=%.1f ping_ms=%.1f pings=%ld "
           "failed_execs=%ld failures_after=%ld ok_before=%ld "
           "created=%llu create_failures=%llu check_failures=%llu "
           "generations=%llu exec_timeout_ms=%d\n",
           (double)(t_ok - r.up_start) / 1e6,
           (double)(r.up_start - t_fail) / 1e6,
           (double)(r.up_end - r.up_start) / 1e6, r.pings, failed,
           after_fail, ok_before,
           (unsigned long long)(after.created - before.created),
           (unsigned long long)(after.create_failures -
                                before.create_failures),
           (unsigned long long)(after.check_failures - before.check_failures),
           (unsigned long long)(after.generation - before.generation),
           timeout_ms);
}

/* ---- main ------------------------------------------------------------------ */

static void
usage(FILE *to)
{
    fprintf(to,
            "usage: bench_pg probe <conninfo>\n"
            "       bench_pg select1|connect <conninfo> <n>\n"
            "       bench_pg overhead <conninfo> <threads> <n> "
            "rollback|nowait|full|check\n"
            "       bench_pg contend <conninfo> <threads> <pool> <ms> "
            "acquire|exec|perconn\n"
            "       bench_pg recovery <conninfo> <exec_timeout_ms> <cmd> "
            "[args...]\n"
            "One line on stdout, as the pg peer drivers in bench/peers/. "
            "bench/run.sh starts\na server and runs this program "
            "interleaved with the peers (make bench BENCH=pg).\n");
}

static long
num(const char *s)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end != '\0' || v <= 0) {
        usage(stderr);
        exit(2);
    }
    return v;
}

int
main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    const char *c = argc > 1 ? argv[1] : "";
    if (!strcmp(c, "probe") && argc == 3) {
        run_probe(argv[2]);
    } else if (!strcmp(c, "select1") && argc == 4) {
        run_select1(argv[2], num(argv[3]));
    } else if (!strcmp(c, "connect") && argc == 4) {
        run_connect(argv[2], num(argv[3]));
    } else if (!strcmp(c, "overhead") && argc == 6) {
        run_overhead(argv[2], (int)num(argv[3]), num(argv[4]), argv[5]);
    } else if (!strcmp(c, "contend") && argc == 7) {
        run_contend(argv[2], (int)num(argv[3]), (int)num(argv[4]),
                    (int)num(argv[5]), argv[6]);
    } else if (!strcmp(c, "recovery") && argc >= 5) {
        run_recovery(argv[2], (int)num(argv[3]), argv + 4);
    } else {
        usage(stderr);
        return 2;
    }
    return 0;
}
