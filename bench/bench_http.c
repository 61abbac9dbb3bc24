/* bench/bench_http.c - poolkit's HTTP pool (issue #13), driven like the
 * http peer drivers in bench/peers/ (peer_http_curl.c,
 * peer_http_requests.py) so bench/run.sh can interleave it with them and
 * read every program the same way. One run, one line of key=value pairs
 * on stdout.
 *
 *   bench_http exec|acquire|post <url> <threads> <warm_ms> <ms> [ca_file]
 *       rps= ns_per_req= requests= fair= min_thread= max_thread=
 *       cpu_ns_per_req= connections= threads= mode= cap= connections_new=
 *       connections_reused= tls_handshakes= tls_resumed= ca_loads=
 *
 * One pool for the run, made before the clock starts: the default options
 * except ca_file (when given) and max_per_origin = max(8, threads). The
 * threads (peer_http_common.h, phb_run: warm_ms untimed, then ms timed,
 * whole requests) each loop:
 *
 *   exec     pk_http_exec GET <url>: borrow a handle, the transfer, the
 *            body and headers copied into the response, give it back
 *            (curl_easy_reset and the pool's options again); then
 *            pk_http_response_free.
 *   acquire  pk_http_acquire, the body into a per-thread buffer as the
 *            libcurl peers keep it, curl_easy_perform, pk_http_release:
 *            the pool without pk_http_exec's request and response
 *            handling.
 *   post     pk_http_exec POST <url> with a 1-byte body. A request that
 *            is not idempotent always goes out on a fresh connection
 *            (CURLOPT_FRESH_CONNECT; http.h, "Replays"), so every request
 *            is a new connection made through the pool: TCP connect, a
 *            TLS handshake that resumes the session cached in the pool's
 *            CURLSH, certificates checked against the pool's CA store
 *            (parsed once, at the first https request, in the warm-up).
 *            nginx answers POST / as GET / (200 "hello\n").
 *
 * connections: what the requests opened (exec and post: responses not
 * marked `reused`; acquire: CURLINFO_NUM_CONNECTS), the whole run; the
 * rest after the run from pk_http_stats_get (the whole pool, warm-up
 * included). Each response is checked (200, "hello\n").
 *
 * A bad command line exits 2, a failed run 1 (the reason on stderr). */
#include "peers/peer_http_common.h"

#include <poolkit/http.h>

enum { MODE_EXEC, MODE_ACQUIRE, MODE_POST };

struct pk_ctx {
    pk_http_pool *pool;
    const char *url;
    int mode;
};

struct pk_ts {
    struct phb_buf body; /* acquire */
};

static void *
pk_thread_init(void *ctx, int index)
{
    (void)ctx;
    (void)index;
    return calloc(1, sizeof(struct pk_ts));
}

static void
pk_thread_fini(void *ctx, void *ts)
{
    struct pk_ts *t = ts;
    (void)ctx;
    free(t->body.p);
    free(t);
}

static int
fail_pk(const char *what, int rc, const pk_error *e)
{
    fprintf(stderr, "bench_http: %s failed: %s%s%s\n", what, pk_strerror(rc),
            e->msg[0] ? ": " : "", e->msg);
    return -1;
}

static int
pk_request(void *ctx, void *ts, long *connects)
{
    struct pk_ctx *c = ctx;
    struct pk_ts *t = ts;
    pk_error e = { 0, 0, "" };
    int rc;

    if (c->mode == MODE_ACQUIRE) {
        pk_http_lease l;
        rc = pk_http_acquire(c->pool, c->url, &l, 10000, &e);
        if (rc)
            return fail_pk("pk_http_acquire", rc, &e);
        if (curl_easy_setopt(l.easy, CURLOPT_WRITEFUNCTION, phb_write) ||
            curl_easy_setopt(l.easy, CURLOPT_WRITEDATA, &t->body)) {
            pk_http_release(c->pool, &l, 0);
            fprintf(stderr, "bench_http: setopt failed\n");
            return -1;
        }
        t->body.len = 0;
        CURLcode cc = curl_easy_perform(l.easy);
        long status = 0, n = 0;
        curl_easy_getinfo(l.easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(l.easy, CURLINFO_NUM_CONNECTS, &n);
        pk_http_release(c->pool, &l, (int)cc);
        if (cc != CURLE_OK) {
            fprintf(stderr, "bench_http: curl_easy_perform: %s\n",
                    curl_easy_strerror(cc));
            return -1;
        }
        *connects += n;
        return phb_check("bench_http", status, t->body.p ? t->body.p : "",
                         t->body.len);
    }

    pk_http_response r;
    if (c->mode == MODE_POST)
        rc = pk_http_exec(c->pool,
                          &(pk_http_request){ .url = c->url, .method = "POST",
                                              .body = "x", .body_len = 1 },
                          &r, &e);
    else
        rc = pk_http_exec(c->pool, &(pk_http_request){ .url = c->url }, &r,
                          &e);
    if (rc) {
        pk_http_response_free(&r);
        return fail_pk("pk_http_exec", rc, &e);
    }
    *connects += !r.reused;
    rc = phb_check("bench_http", r.status, r.body ? r.body : "", r.body_len);
    pk_http_response_free(&r);
    return rc;
}

static void
usage(FILE *to)
{
    fprintf(to,
            "usage: bench_http exec|acquire|post <url> <threads> <warm_ms> "
            "<ms> [ca_file]\n"
            "One line on stdout, as the http peer drivers in bench/peers/. "
            "bench/run.sh starts\nnginx and runs this program interleaved "
            "with the peers (make bench BENCH=http).\n");
}

int
main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc != 6 && argc != 7) {
        usage(stderr);
        return 2;
    }
    struct pk_ctx c = { .url = argv[2] };
    if (!strcmp(argv[1], "exec"))
        c.mode = MODE_EXEC;
    else if (!strcmp(argv[1], "acquire"))
        c.mode = MODE_ACQUIRE;
    else if (!strcmp(argv[1], "post"))
        c.mode = MODE_POST;
    else
        c.mode = -1;
    long threads = phb_num(argv[3], 1), warm = phb_num(argv[4], 0),
         ms = phb_num(argv[5], 1);
    if (c.mode < 0 || threads < 0 || warm < 0 || ms < 0) {
        usage(stderr);
        return 2;
    }
    size_t cap = threads > 8 ? (size_t)threads : 8;
    pk_http_options o = { .max_per_origin = cap,
                          .ca_file = argc == 7 ? argv[6] : NULL };
    pk_error e = { 0, 0, "" };
    int rc = pk_http_pool_create(&c.pool, &o, &e);
    if (rc) {
        fail_pk("pk_http_pool_create", rc, &e);
        return 1;
    }
    struct phb_ops ops = { .ctx = &c, .thread_init = pk_thread_init,
                           .thread_fini = pk_thread_fini,
                           .request = pk_request };
    phb_run(&ops, (int)threads, (int)warm, (int)ms);
    pk_http_stats st;
    if (pk_http_stats_get(c.pool, NULL, &st) != 0)
        phb_die("bench_http: pk_http_stats_get failed");
    printf(" mode=%s cap=%zu connections_new=%llu connections_reused=%llu "
           "tls_handshakes=%llu tls_resumed=%llu ca_loads=%llu\n",
           argv[1], cap, (unsigned long long)st.connections_new,
           (unsigned long long)st.connections_reused,
           (unsigned long long)st.tls_handshakes,
           (unsigned long long)st.tls_resumed,
           (unsigned long long)st.ca_loads);
    pk_http_pool_destroy(c.pool);
    return 0;
}
