/* tests/integration/test_http.c - the HTTP pool against a real nginx: a
 * throwaway server (tests/support/http_server.sh, plain and TLS on free
 * loopback ports) started in the group setup and removed in the
 * teardown. No mock stands in for it. Its access log (method, URI,
 * status, nginx's connection serial, requests on that connection, TLS
 * session reused) is how the tests see connections from the server's
 * side.
 *
 * Without nginx the binary prints why and exits 0 (skipped), unless
 * PK_HTTP_REQUIRED=1 (make check sets it, since its set-up installs
 * nginx): then it is a failure. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <poolkit/http.h>

#include "server_script.h"
#include "test_util.h"

#define LONG_MS 20000

static char script[PATH_MAX];
static char dir[] = "/tmp/pk_http_test.XXXXXX";
static int http_port, https_port;

/* ---- the server ------------------------------------------------------------- */

static int
find_script(void)
{
    return script_find(script, "http_server.sh", NULL);
}

static int
server(const char *cmd)
{
    return script_run(script, cmd, dir);
}

static int
group_setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir) || server("start") != 0) {
        fprintf(stderr, "test_http: could not start nginx in %s\n", dir);
        return -1;
    }
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/ports", dir);
    FILE *f = fopen(path, "r");
    int ok = f && fscanf(f, "%d %d", &http_port, &https_port) == 2;
    if (f)
        fclose(f);
    return ok ? 0 : -1;
}

static int
group_teardown(void **state)
{
    (void)state;
    server("clean");
    return 0;
}

static const char *
url(char *buf, size_t n, int tls, const char *path)
{
    snprintf(buf, n, "%s://127.0.0.1:%d%s", tls ? "https" : "http",
             tls ? https_port : http_port, path);
    return buf;
}

static const char *
ca_file(char *buf, size_t n)
{
    snprintf(buf, n, "%s/cert.pem", dir);
    return buf;
}

/* The access log, from line `from` on: how many lines for method and
 * path, and how many distinct connections they came over. */
struct log_view {
    int lines;
    int connections;
    int reused_sessions; /* $ssl_session_reused "r" */
    int with_cookie;     /* a Cookie header was sent */
};

static int
log_lines(void)
{
    char path[sizeof dir + 16], line[256];
    snprintf(path, sizeof path, "%s/access.log", dir);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n++;
    if (f)
        fclose(f);
    return n;
}

static struct log_view
log_since(int from, const char *method, const char *path)
{
    char file[sizeof dir + 16], line[256], m[16], u[128], r[8], ck[64];
    long conns[4096];
    int nconns = 0, i = 0, status, reqs;
    long conn;
    struct log_view v = { 0, 0, 0, 0 };

    sleep_ms(50); /* nginx writes its log line after the response */
    snprintf(file, sizeof file, "%s/access.log", dir);
    FILE *f = fopen(file, "r");
    while (f && fgets(line, sizeof line, f)) {
        if (i++ < from)
            continue;
        if (sscanf(line, "%15s %127s %d %ld %d %7s %63s", m, u, &status,
                   &conn, &reqs, r, ck) != 7 ||
            strcmp(m, method) != 0 || strcmp(u, path) != 0)
            continue;
        v.lines++;
        v.with_cookie += strcmp(ck, "-") != 0;
        v.reused_sessions += strcmp(r, "r") == 0;
        int seen = 0;
        for (int k = 0; k < nconns; k++)
            seen |= conns[k] == conn;
        if (!seen && nconns < 4096)
            conns[nconns++] = conn;
    }
    if (f)
        fclose(f);
    v.connections = nconns;
    return v;
}

static pk_http_pool *
make_pool(const pk_http_options *o)
{
    pk_http_pool *pool = NULL;
    pk_error err;
    int rc = pk_http_pool_create(&pool, o, &err);
    if (rc)
        fail_msg("pk_http_pool_create: %s: %s", pk_err_name(rc), err.msg);
    return pool;
}

/* A GET that must succeed with 200; returns the body's length. */
static size_t
get_ok(pk_http_pool *pool, const char *u)
{
    pk_http_response r;
    pk_error err;
    int rc = pk_http_exec(pool, &(pk_http_request){ .url = u }, &r, &err);
    if (rc)
        fail_msg("GET %s: %s: %s", u, pk_err_name(rc), err.msg);
    assert_int_equal(r.status, 200);
    size_t n = r.body_len;
    pk_http_response_free(&r);
    return n;
}

static pk_http_stats
stats(pk_http_pool *pool)
{
    pk_http_stats s;
    assert_int_equal(pk_http_stats_get(pool, NULL, &s), 0);
    return s;
}

/* ---- reuse ------------------------------------------------------------------------ */

static void
test_sequential_requests_use_one_connection(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(NULL);
    char u[128];
    int from = log_lines();

    for (int i = 0; i < 20; i++)
        assert_int_equal(get_ok(pool, url(u, sizeof u, 0, "/")), 6);
    struct log_view v = log_since(from, "GET", "/");
    assert_int_equal(v.lines, 20);
    assert_int_equal(v.connections, 1);
    pk_http_stats s = stats(pool);
    assert_int_equal(s.requests, 20);
    assert_int_equal(s.connections_new, 1);
    assert_int_equal(s.connections_reused, 19);
    assert_int_equal(s.origins, 1);
    assert_int_equal(s.ca_loads, 0); /* no TLS origin: no CA parse */

    /* The response itself. */
    pk_http_response r;
    pk_error err;
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 0, "/") },
                                  &r, &err),
                     0);
    assert_string_equal(r.body, "hello\n");
    assert_non_null(strstr(r.headers, "HTTP/1.1 200"));
    assert_int_equal(r.attempts, 1);
    assert_true(r.reused);
    pk_http_response_free(&r);
    assert_null(r.body);
    pk_http_pool_destroy(pool);
}

struct hammer {
    pk_http_pool *pool;
    char url[128];
    int n;
    atomic_int failed;
};

static void *
hammer_main(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < h->n; i++) {
        pk_http_response r;
        pk_error err;
        if (pk_http_exec(h->pool, &(pk_http_request){ .url = h->url }, &r,
                         &err) != 0 ||
            r.status != 200)
            atomic_fetch_add(&h->failed, 1);
        pk_http_response_free(&r);
    }
    return NULL;
}

static void
run_hammer(struct hammer *h, int threads)
{
    pthread_t t[16];
    for (int i = 0; i < threads; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer_main, h), 0);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&h->failed), 0);
}

/* 8 threads share a pool capped at 4 connections for the origin. */
static void
test_threads_share_at_most_the_cap(void **state)
{
    (void)state;
    struct hammer h = { .n = SANITIZED ? 100 : 500 };
    h.pool = make_pool(&(pk_http_options){ .max_per_origin = 4 });
    url(h.url, sizeof h.url, 0, "/");
    int from = log_lines();
    run_hammer(&h, 8);
    struct log_view v = log_since(from, "GET", "/");
    assert_int_equal(v.lines, 8 * h.n);
    assert_true(v.connections >= 1 && v.connections <= 4);
    pk_http_stats s = stats(h.pool);
    assert_true(s.connections_new <= 4);
    assert_true(s.core.size <= 4);
    assert_int_equal(s.requests, (uint64_t)(8 * h.n));
    pk_http_pool_destroy(h.pool);
}

/* ---- staleness, replays, retries -------------------------------------------------- */

/* /short's connection is closed by nginx after 1 s idle: the next request
 * must not notice (the check retires it before lending). */
static void
test_connection_closed_by_server_is_not_lent(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(&(pk_http_options){ .retries = PK_NEVER });
    char u[128];
    url(u, sizeof u, 0, "/short");
    get_ok(pool, u);
    sleep_ms(1600);
    get_ok(pool, u);
    pk_http_stats s = stats(pool);
    assert_int_equal(s.stale_caught, 1);
    assert_int_equal(s.connections_new, 2);
    assert_int_equal(s.retries, 0);
    pk_http_pool_destroy(pool);
}

/* A POST goes out on a fresh connection, so libcurl cannot replay it on a
 * dead reused one; a POST whose connection dies before the response is
 * sent once (the log counts them); an idempotent GET is retried. */
static void
test_post_is_never_sent_twice(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(NULL);
    char u[128];
    pk_http_response r;
    pk_error err;
    int from = log_lines();

    for (int i = 0; i < 2; i++) {
        assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                          .url = url(u, sizeof u, 0, "/"),
                                          .body = "a=1", .body_len = 3 },
                                      &r, &err),
                         0);
        assert_int_equal(r.status, 200);
        assert_false(r.reused);
        pk_http_response_free(&r);
    }
    pk_http_stats s = stats(pool);
    assert_int_equal(s.fresh_for_replay, 2);

    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 0, "/drop"),
                                      .method = "POST", .body = "x",
                                      .body_len = 1 },
                                  &r, &err),
                     PK_EADAPTER);
    assert_int_equal(err.sys, CURLE_GOT_NOTHING);
    assert_int_equal(r.attempts, 1);
    pk_http_response_free(&r);
    assert_int_equal(log_since(from, "POST", "/drop").lines, 1);

    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 0, "/drop") },
                                  &r, &err),
                     PK_EADAPTER);
    assert_int_equal(r.attempts, 2); /* GET: retried once */
    pk_http_response_free(&r);
    assert_int_equal(log_since(from, "GET", "/drop").lines, 2);
    assert_int_equal(stats(pool).retries, 1);
    pk_http_pool_destroy(pool);
}

/* ---- caps and timeouts ------------------------------------------------------------ */

static void
test_acquire_times_out_at_the_cap(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(&(pk_http_options){ .max_per_origin = 1 });
    char u[128];
    pk_http_lease l;
    pk_http_response r;
    pk_error err;
    struct timespec t0, t1;

    assert_int_equal(pk_http_acquire(pool, url(u, sizeof u, 0, "/"), &l,
                                     LONG_MS, &err),
                     0);
    assert_non_null(l.easy);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = u, .timeout_ms = 200 },
                                  &r, &err),
                     PK_ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 +
              (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 150 && ms < 5000);
    pk_http_response_free(&r);
    /* The held handle works with libcurl directly. */
    assert_int_equal(curl_easy_perform(l.easy), CURLE_OK);
    assert_int_equal(pk_http_release(pool, &l, CURLE_OK), 0);
    assert_int_equal(pk_http_release(pool, &l, CURLE_OK), PK_EINVAL);
    get_ok(pool, u);

    /* A transfer keeps its own timeout: /slow takes 4 s. */
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 0, "/slow"),
                                      .timeout_ms = 300 },
                                  &r, &err),
                     PK_ETIMEDOUT);
    assert_int_equal(err.sys, CURLE_OPERATION_TIMEDOUT);
    pk_http_response_free(&r);
    get_ok(pool, url(u, sizeof u, 0, "/"));
    pk_http_pool_destroy(pool);
}

/* A handle the caller set up by hand is reset whole when it comes back;
 * the adapter's own requests undo only what they set. Either way the
 * next request is a plain GET. */
static void
test_release_resets_what_the_borrower_set(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(&(pk_http_options){ .max_per_origin = 1 });
    char u[128];
    pk_http_lease l;
    pk_error err;
    int from = log_lines();
    url(u, sizeof u, 0, "/");
    assert_int_equal(pk_http_acquire(pool, u, &l, LONG_MS, &err), 0);
    curl_easy_setopt(l.easy, CURLOPT_CUSTOMREQUEST, "DELETE");
    assert_int_equal(curl_easy_perform(l.easy), CURLE_OK);
    assert_int_equal(pk_http_release(pool, &l, CURLE_OK), 0);
    pk_http_response r;
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = u, .method = "PUT",
                                      .body = "x", .body_len = 1,
                                      .headers = (const char *const[]){
                                          "X-Pk: 1", NULL } },
                                  &r, &err),
                     0);
    pk_http_response_free(&r);
    get_ok(pool, u);
    assert_int_equal(log_since(from, "DELETE", "/").lines, 1);
    assert_int_equal(log_since(from, "PUT", "/").lines, 1);
    assert_int_equal(log_since(from, "GET", "/").lines, 1);
    pk_http_pool_destroy(pool);
}

/* Cookies: a borrower that turned the cookie engine on leaves no cookie
 * to the next one; with share_cookies the pool keeps one store, used by
 * every handle. */
static void
test_cookies_do_not_leak_unless_shared(void **state)
{
    (void)state;
    char c[128], u[128];
    pk_http_lease l;
    pk_error err;
    pk_http_pool *pool = make_pool(&(pk_http_options){ .max_per_origin = 1 });
    url(c, sizeof c, 0, "/cookie");
    url(u, sizeof u, 0, "/");
    int from = log_lines();
    assert_int_equal(pk_http_acquire(pool, c, &l, LONG_MS, &err), 0);
    curl_easy_setopt(l.easy, CURLOPT_COOKIEFILE, "");
    assert_int_equal(curl_easy_perform(l.easy), CURLE_OK);
    curl_easy_setopt(l.easy, CURLOPT_URL, u);
    assert_int_equal(curl_easy_perform(l.easy), CURLE_OK);
    assert_int_equal(pk_http_release(pool, &l, CURLE_OK), 0);
    assert_int_equal(log_since(from, "GET", "/").with_cookie, 1);
    from = log_lines();
    get_ok(pool, u);
    assert_int_equal(log_since(from, "GET", "/").with_cookie, 0);
    pk_http_pool_destroy(pool);

    pool = make_pool(&(pk_http_options){ .share_cookies = 1 });
    get_ok(pool, c);
    from = log_lines();
    get_ok(pool, u);
    assert_int_equal(log_since(from, "GET", "/").with_cookie, 1);
    pk_http_pool_destroy(pool);
}

/* At the total cap, another origin's idle handle is retired so a waiting
 * origin can open one (the core's group). */
static void
test_total_cap_moves_to_the_origin_that_waits(void **state)
{
    (void)state;
    char ca[sizeof dir + 16], u[128];
    pk_http_pool *pool = make_pool(&(pk_http_options){
        .max_per_origin = 2, .max_total = 2,
        .ca_file = ca_file(ca, sizeof ca) });
    pk_http_lease a, b;
    pk_error err;
    url(u, sizeof u, 0, "/");
    assert_int_equal(pk_http_acquire(pool, u, &a, LONG_MS, &err), 0);
    assert_int_equal(pk_http_acquire(pool, u, &b, LONG_MS, &err), 0);
    assert_int_equal(pk_http_release(pool, &a, CURLE_OK), 0);
    assert_int_equal(pk_http_release(pool, &b, CURLE_OK), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(get_ok(pool, url(u, sizeof u, 1, "/")), 6);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true((t1.tv_sec - t0.tv_sec) * 1000 +
                    (t1.tv_nsec - t0.tv_nsec) / 1000000 < 2000);
    pk_http_stats s;
    assert_int_equal(pk_http_stats_get(pool, NULL, &s), 0);
    assert_true(s.core.size <= 2);
    pk_http_pool_destroy(pool);
}

/* ---- TLS ----------------------------------------------------------------------------- */

static void
test_tls_verifies_and_loads_the_ca_once(void **state)
{
    (void)state;
    char u[128], ca[sizeof dir + 16];
    pk_http_response r;
    pk_error err;

    /* The default CA bundle does not know the self-signed certificate. */
    pk_http_pool *pool = make_pool(NULL);
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 1, "/") },
                                  &r, &err),
                     PK_ECONNECT);
    assert_non_null(strstr(err.msg, "certificate"));
    pk_http_response_free(&r);
    pk_http_pool_destroy(pool);

    /* Given its CA: 8 threads, 4 connections, one CA parse; the later
     * handshakes resume the first one's session. */
    struct hammer h = { .n = SANITIZED ? 20 : 100 };
    h.pool = make_pool(&(pk_http_options){ .max_per_origin = 4,
                                           .ca_file = ca_file(ca,
                                                              sizeof ca) });
    url(h.url, sizeof h.url, 1, "/");
    int from = log_lines();
    run_hammer(&h, 8);
    pk_http_stats s = stats(h.pool);
    assert_int_equal(s.ca_loads, 1);
    assert_true(s.tls_handshakes >= 1 && s.tls_handshakes <= 4);
    struct log_view v = log_since(from, "GET", "/");
    assert_int_equal(v.lines, 8 * h.n);
    assert_true(v.connections <= 4);
    /* A POST goes out on a fresh connection: its handshake resumes the
     * session the others stored in the shared cache. */
    from = log_lines();
    assert_int_equal(pk_http_exec(h.pool, &(pk_http_request){
                                      .url = h.url, .body = "x",
                                      .body_len = 1 },
                                  &r, &err),
                     0);
    pk_http_response_free(&r);
    pk_http_stats s2 = stats(h.pool);
    assert_int_equal(s2.tls_handshakes, s.tls_handshakes + 1);
    assert_int_equal(s2.tls_resumed, s.tls_resumed + 1);
    assert_int_equal(log_since(from, "POST", "/").reused_sessions, 1);
    pk_http_pool_destroy(h.pool);

    pool = make_pool(&(pk_http_options){ .insecure = 1 });
    assert_int_equal(get_ok(pool, url(u, sizeof u, 1, "/")), 6);
    pk_http_pool_destroy(pool);
}

/* HTTP/2 on request: still one connection per handle, its requests over
 * it. */
static void
test_http2_on_request(void **state)
{
    (void)state;
    char ca[sizeof dir + 16], u[128];
    pk_http_pool *pool = make_pool(&(pk_http_options){
        .http2 = 1, .ca_file = ca_file(ca, sizeof ca) });
    int from = log_lines();
    url(u, sizeof u, 1, "/");
    for (int i = 0; i < 5; i++) {
        pk_http_response r;
        pk_error err;
        assert_int_equal(pk_http_exec(pool, &(pk_http_request){ .url = u },
                                      &r, &err),
                         0);
        assert_int_equal(r.status, 200);
        assert_true(strncmp(r.headers, "HTTP/2", 6) == 0);
        pk_http_response_free(&r);
    }
    assert_int_equal(log_since(from, "GET", "/").connections, 1);
    assert_int_equal(stats(pool).connections_new, 1);
    pk_http_pool_destroy(pool);
    /* The default stays HTTP/1.1. */
    pool = make_pool(&(pk_http_options){ .ca_file = ca });
    pk_http_response r;
    pk_error err;
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){ .url = u }, &r,
                                  &err),
                     0);
    assert_true(strncmp(r.headers, "HTTP/1.1", 8) == 0);
    pk_http_response_free(&r);
    pk_http_pool_destroy(pool);
}

/* ---- bodies, redirects, streams ------------------------------------------------------ */

static int
count_bytes(void *user, const void *data, size_t len)
{
    (void)data;
    *(size_t *)user += len;
    return 0;
}

static int
stop_at_once(void *user, const void *data, size_t len)
{
    (void)user;
    (void)data;
    (void)len;
    return 1;
}

static void
test_limits_streams_and_redirects(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(&(pk_http_options){ .max_redirects = 2 });
    char u[128];
    pk_http_response r;
    pk_error err;

    /* 10 MiB against a 1 MiB limit: refused, the pool still works. */
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 0, "/big"),
                                      .max_response = 1 << 20 },
                                  &r, &err),
                     PK_ETOOBIG);
    pk_http_response_free(&r);
    assert_int_equal(get_ok(pool, url(u, sizeof u, 0, "/")), 6);
    assert_int_equal(get_ok(pool, url(u, sizeof u, 0, "/big")), 10 << 20);

    size_t n = 0;
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 0, "/big"),
                                      .on_data = count_bytes,
                                      .on_data_user = &n },
                                  &r, &err),
                     0);
    assert_int_equal(n, 10 << 20);
    assert_null(r.body);
    pk_http_response_free(&r);
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 0, "/big"),
                                      .on_data = stop_at_once },
                                  &r, &err),
                     PK_ECANCELED);
    pk_http_response_free(&r);

    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 0,
                                                 "/redirect") },
                                  &r, &err),
                     0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello\n");
    pk_http_response_free(&r);
    pk_http_pool_destroy(pool);

    /* Without max_redirects the 302 is the answer. */
    pool = make_pool(NULL);
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 0,
                                                 "/redirect") },
                                  &r, &err),
                     0);
    assert_int_equal(r.status, 302);
    pk_http_response_free(&r);
    pk_http_pool_destroy(pool);
}

/* ---- fork, bad input, stats ------------------------------------------------------------ */

static void
test_fork_child_destroy_leaves_parent_connection_alive(void **state)
{
    (void)state;
    if (SANITIZED) {
        printf("test_http: skip: fork from a threaded parent under a "
               "sanitizer (test_util.h)\n");
        skip();
    }
    pk_http_pool *pool = make_pool(NULL);
    char u[128];
    get_ok(pool, url(u, sizeof u, 0, "/"));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pk_http_pool_destroy(pool);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    get_ok(pool, u);
    assert_int_equal(stats(pool).connections_new, 1);
    pk_http_pool_destroy(pool);
}

static void
test_bad_input_is_a_clear_error(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(NULL);
    pk_http_response r;
    pk_http_lease l;
    pk_error err;
    char u[128];

    assert_int_equal(pk_http_pool_create(NULL, NULL, &err), PK_EINVAL);
    pk_http_pool *p2;
    assert_int_equal(pk_http_pool_create(&p2, &(pk_http_options){
                                             .connect_timeout_ms = -5 },
                                         &err),
                     PK_EINVAL);
    assert_non_null(strstr(err.msg, "connect_timeout_ms"));
    assert_int_equal(pk_http_pool_create(&p2, &(pk_http_options){
                                             .ca_file = "/nonexistent" },
                                         &err),
                     PK_EINVAL);
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = "http://[::1" },
                                  &r, &err),
                     PK_EINVAL);
    assert_non_null(strstr(err.msg, "bad URL"));
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = "ftp://127.0.0.1/x" },
                                  &r, &err),
                     PK_EINVAL);
    assert_non_null(strstr(err.msg, "unsupported scheme"));
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){ .url = NULL },
                                  &r, &err),
                     PK_EINVAL);
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = url(u, sizeof u, 0, "/"),
                                      .body_len = 4 },
                                  &r, &err),
                     PK_EINVAL);
    assert_int_equal(pk_http_exec(NULL, &(pk_http_request){ .url = u }, &r,
                                  &err),
                     PK_EINVAL);
    assert_int_equal(pk_http_exec(pool, NULL, &r, &err), PK_EINVAL);
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){ .url = u }, NULL,
                                  &err),
                     PK_EINVAL);
    assert_int_equal(pk_http_acquire(pool, "nope", &l, 10, &err), PK_EINVAL);
    assert_int_equal(pk_http_acquire(pool, u, NULL, 10, &err), PK_EINVAL);
    assert_int_equal(pk_http_acquire(pool, u, &l, -7, &err), PK_EINVAL);
    assert_int_equal(pk_http_release(pool, NULL, 0), PK_EINVAL);
    assert_int_equal(pk_http_release(NULL, &l, 0), PK_EINVAL);
    pk_http_stats s;
    assert_int_equal(pk_http_stats_get(pool, "http://nowhere:1", &s),
                     PK_ENOENT);
    assert_int_equal(pk_http_stats_get(pool, NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_http_pool_close(NULL, 0), PK_EINVAL);
    pk_http_response_free(NULL);
    pk_http_pool_destroy(NULL);
    /* Refused connections: the connect error, fast; not counted as a
     * reused connection. */
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){
                                      .url = "http://127.0.0.1:1/" },
                                  &r, &err),
                     PK_ECONNECT);
    assert_false(r.reused);
    pk_http_response_free(&r);
    assert_int_equal(pk_http_stats_get(pool, "http://127.0.0.1:1", &s), 0);
    assert_int_equal(s.connections_reused, 0);
    assert_int_equal(s.connections_new, 0);
    get_ok(pool, u);
    assert_int_equal(pk_http_stats_get(pool, u, &s), 0);
    assert_int_equal(s.requests, 1);
    pk_http_pool_destroy(pool);
}

/* The server says `Keep-Alive: timeout=2` (and keeps 4 s): after 1.2 s
 * idle the connection is retired before it is lent (the pool keeps a
 * second's margin), though nginx would still have served it. */
static void
test_keep_alive_header_retires_early(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(&(pk_http_options){ .retries = PK_NEVER });
    char u[128];
    url(u, sizeof u, 0, "/ka");
    int from = log_lines();
    get_ok(pool, u);
    sleep_ms(1200);
    get_ok(pool, u);
    pk_http_stats s = stats(pool);
    assert_int_equal(s.stale_caught, 1);
    assert_int_equal(s.connections_new, 2);
    assert_int_equal(log_since(from, "GET", "/ka").connections, 2);
    pk_http_pool_destroy(pool);
}

static void
test_prewarm_opens_connections_ahead(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(&(pk_http_options){ .max_per_origin = 4 });
    char u[128];
    pk_error err;
    url(u, sizeof u, 0, "/");
    int from = log_lines();
    assert_int_equal(pk_http_prewarm(pool, u, NULL, 2, &err), 0);
    pk_http_stats s;
    for (int i = 0; i < 300; i++) {
        assert_int_equal(pk_http_stats_get(pool, u, &s), 0);
        if (s.core.idle >= 2)
            break;
        sleep_ms(10);
    }
    assert_int_equal(s.core.idle, 2);
    assert_int_equal(log_since(from, "HEAD", "/").lines, 2);
    pk_http_response r;
    assert_int_equal(pk_http_exec(pool, &(pk_http_request){ .url = u }, &r,
                                  &err),
                     0);
    assert_true(r.reused); /* a warm connection, not a new one */
    pk_http_response_free(&r);
    assert_int_equal(stats(pool).connections_new, 0);
    assert_int_equal(pk_http_prewarm(pool, u, NULL, 9, &err), PK_EINVAL);
    assert_int_equal(pk_http_prewarm(pool, "bad", NULL, 1, &err), PK_EINVAL);
    assert_int_equal(pk_http_prewarm(NULL, u, NULL, 1, &err), PK_EINVAL);
    assert_int_equal(pk_http_prewarm(pool, u, NULL, 0, &err), 0);
    pk_http_pool_destroy(pool);
}

/* ---- load: a reload, a restart, a stalled origin ------------------------------------- */

struct load {
    pk_http_pool *pool;
    char url[128];
    atomic_int phase; /* 0 steady, 1 around a restart, 2 after */
    atomic_int stop, ok, failed_steady, failed_after;
};

static void *
load_main(void *arg)
{
    struct load *ld = arg;
    while (!atomic_load(&ld->stop)) {
        int phase = atomic_load(&ld->phase);
        pk_http_response r;
        pk_error err;
        int rc = pk_http_exec(ld->pool, &(pk_http_request){ .url = ld->url,
                                                            .timeout_ms = 5000 },
                              &r, &err);
        pk_http_response_free(&r);
        if (rc == 0)
            atomic_fetch_add(&ld->ok, 1);
        else if (phase == 0)
            atomic_fetch_add(&ld->failed_steady, 1);
        else if (phase == 2)
            atomic_fetch_add(&ld->failed_after, 1);
        if (rc)
            sleep_ms(5);
    }
    return NULL;
}

/* nginx reloaded under load: its old workers close their idle keep-alive
 * connections; not one GET fails (stale ones are caught or retried).
 * Restarted: requests during the gap may fail; none after it. */
static void
test_nginx_reload_and_restart_under_load(void **state)
{
    (void)state;
    struct load ld = { 0 };
    ld.pool = make_pool(&(pk_http_options){ .max_per_origin = 4 });
    url(ld.url, sizeof ld.url, 0, "/");
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, load_main, &ld), 0);
    sleep_ms(200);
    assert_int_equal(server("reload"), 0);
    sleep_ms(500);
    atomic_store(&ld.phase, 1);
    assert_int_equal(server("restart"), 0);
    sleep_ms(300);
    atomic_store(&ld.phase, 2);
    int ok_before = atomic_load(&ld.ok);
    sleep_ms(500);
    atomic_store(&ld.stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&ld.failed_steady), 0);
    assert_int_equal(atomic_load(&ld.failed_after), 0);
    assert_true(atomic_load(&ld.ok) > ok_before);
    pk_http_pool_destroy(ld.pool);
}

struct slow_get {
    pk_http_pool *pool;
    char url[128];
    int rc;
    long status;
    size_t len;
};

static void *
slow_main(void *arg)
{
    struct slow_get *g = arg;
    pk_http_response r;
    pk_error err;
    g->rc = pk_http_exec(g->pool, &(pk_http_request){ .url = g->url,
                                                      .timeout_ms = 1500 },
                         &r, &err);
    g->status = r.status;
    g->len = r.body_len;
    pk_http_response_free(&r);
    return NULL;
}

/* A stalled origin (/slow, 4 s a response) holds only its share: with a
 * cap of 2 per origin and 4 in all, another origin is served at once. */
static void
test_stalled_origin_holds_only_its_share(void **state)
{
    (void)state;
    char ca[sizeof dir + 16], u[128];
    pk_http_pool *pool = make_pool(&(pk_http_options){
        .max_per_origin = 2, .max_total = 4,
        .ca_file = ca_file(ca, sizeof ca) });
    struct slow_get g[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        g[i].pool = pool;
        url(g[i].url, sizeof g[i].url, 0, "/slow");
        assert_int_equal(pthread_create(&t[i], NULL, slow_main, &g[i]), 0);
    }
    sleep_ms(200);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(get_ok(pool, url(u, sizeof u, 1, "/")), 6);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 +
              (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms < 1000);
    pk_http_stats s;
    char slow[128];
    assert_int_equal(pk_http_stats_get(pool, url(slow, sizeof slow, 0, "/"),
                                       &s),
                     0);
    assert_true(s.core.size <= 2);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        if (g[i].rc != PK_ETIMEDOUT)
            fail_msg("a stalled GET gave %s (status %ld, %zu bytes)",
                     pk_err_name(g[i].rc), g[i].status, g[i].len);
    }
    pk_http_pool_destroy(pool);
}

/* ---- the batch ------------------------------------------------------------------------- */

struct progress {
    size_t calls, last_completed, total;
    int failures;
};

static void
on_done(void *user, size_t index, size_t completed, size_t total, int rc,
        const pk_http_response *r, const pk_error *err)
{
    struct progress *p = user;
    (void)index;
    (void)r;
    p->calls++;
    assert_int_equal(completed, p->calls);
    p->last_completed = completed;
    p->total = total;
    if (rc) {
        p->failures++;
        assert_non_null(err);
    }
}

/* The batch reuses the connection pk_http_exec opened (and the other way
 * round): every transfer goes through its handle's own multi handle. */
static void
test_batch_reuses_the_pools_connections(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(&(pk_http_options){ .max_per_origin = 4,
                                                       .max_redirects = 1 });
    char u[128];
    int from = log_lines();
    get_ok(pool, url(u, sizeof u, 0, "/"));

    enum { N = 24 };
    pk_http_request rq[N];
    pk_http_response out[N];
    int codes[N];
    char urls[N][128];
    for (int i = 0; i < N; i++) {
        url(urls[i], sizeof urls[i], 0, i % 8 == 7 ? "/redirect" : "/");
        rq[i] = (pk_http_request){ .url = urls[i] };
    }
    struct progress pr = { 0 };
    pk_error err;
    assert_int_equal(pk_http_batch_run(pool, &(pk_http_batch){
                                           .requests = rq, .n = N,
                                           .responses = out, .codes = codes,
                                           .max_parallel = 1,
                                           .on_done = on_done,
                                           .user = &pr },
                                       &err),
                     0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(codes[i], 0);
        assert_int_equal(out[i].status, 200);
        assert_string_equal(out[i].body, "hello\n");
        pk_http_response_free(&out[i]);
    }
    assert_int_equal(pr.calls, N);
    assert_int_equal(pr.total, N);
    /* One at a time: exec's GET and the batch's 24 (3 of them after a
     * redirect), all over exec's connection. */
    struct log_view v = log_since(from, "GET", "/");
    assert_int_equal(v.lines, 1 + N);
    assert_int_equal(v.connections, 1);
    assert_int_equal(stats(pool).connections_new, 1);

    /* In parallel: 4 at once, at most the cap of 4 connections. */
    from = log_lines();
    pr = (struct progress){ 0 };
    assert_int_equal(pk_http_batch_run(pool, &(pk_http_batch){
                                           .requests = rq, .n = N,
                                           .responses = out,
                                           .max_parallel = 6,
                                           .on_done = on_done,
                                           .user = &pr },
                                       &err),
                     0);
    for (int i = 0; i < N; i++)
        pk_http_response_free(&out[i]);
    v = log_since(from, "GET", "/");
    assert_int_equal(v.lines, N);
    assert_true(v.connections >= 1 && v.connections <= 4);
    assert_true(stats(pool).connections_new <= 4);
    /* And exec after the batch: still no new connection. */
    uint64_t made = stats(pool).connections_new;
    get_ok(pool, url(u, sizeof u, 0, "/"));
    assert_int_equal(stats(pool).connections_new, made);
    pk_http_pool_destroy(pool);
}

/* On a cold pool the batch opens its transfers in parallel: four 1.5 s
 * timeouts on /slow end together, over four connections, not one after
 * the other. */
static void
test_batch_runs_in_parallel_from_cold(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(&(pk_http_options){ .max_per_origin = 4 });
    enum { N = 4 };
    pk_http_request rq[N];
    pk_http_response out[N];
    int codes[N];
    char u[128];
    url(u, sizeof u, 0, "/slow");
    for (int i = 0; i < N; i++)
        rq[i] = (pk_http_request){ .url = u, .timeout_ms = 1500 };
    struct timespec t0, t1;
    pk_error err;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(pk_http_batch_run(pool, &(pk_http_batch){
                                           .requests = rq, .n = N,
                                           .responses = out, .codes = codes,
                                           .max_parallel = N },
                                       &err),
                     PK_ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 +
              (t1.tv_nsec - t0.tv_nsec) / 1000000;
    if (ms > 4000)
        fail_msg("the batch took %ld ms: its transfers ran one at a time",
                 ms);
    for (int i = 0; i < N; i++) {
        assert_int_equal(codes[i], PK_ETIMEDOUT);
        pk_http_response_free(&out[i]);
    }
    assert_int_equal(stats(pool).connections_new, N);
    /* A 0 ms acquire on a cold origin makes a handle. */
    pk_http_lease l;
    char v[128];
    assert_int_equal(pk_http_acquire(pool, url(v, sizeof v, 1, "/"), &l, 0,
                                     &err),
                     0);
    assert_int_equal(pk_http_release(pool, &l, 0), 0);
    pk_http_pool_destroy(pool);
}

static void
test_batch_reports_each_failure(void **state)
{
    (void)state;
    pk_http_pool *pool = make_pool(NULL);
    char a[128], b[128], c[128];
    pk_http_request rq[3] = {
        { .url = url(a, sizeof a, 0, "/") },
        { .url = url(b, sizeof b, 0, "/drop"), .method = "POST",
          .body = "x", .body_len = 1 },
        { .url = url(c, sizeof c, 0, "/slow"), .timeout_ms = 200 },
    };
    pk_http_response out[3];
    int codes[3];
    struct progress pr = { 0 };
    pk_error err;
    assert_int_equal(pk_http_batch_run(pool, &(pk_http_batch){
                                           .requests = rq, .n = 3,
                                           .responses = out, .codes = codes,
                                           .on_done = on_done,
                                           .user = &pr },
                                       &err),
                     PK_EADAPTER); /* the first to fail: /drop, at once */
    assert_int_equal(codes[0], 0);
    assert_int_equal(codes[1], PK_EADAPTER);
    if (codes[2] != PK_ETIMEDOUT)
        fail_msg("the slow request: %s", pk_err_name(codes[2]));
    assert_int_equal(pr.failures, 2);
    for (int i = 0; i < 3; i++)
        pk_http_response_free(&out[i]);

    /* Bad input: nothing is sent. */
    rq[1].url = "nope://x";
    assert_int_equal(pk_http_batch_run(pool, &(pk_http_batch){
                                           .requests = rq, .n = 3,
                                           .responses = out },
                                       &err),
                     PK_EINVAL);
    rq[1].url = NULL;
    assert_int_equal(pk_http_batch_run(pool, &(pk_http_batch){
                                           .requests = rq, .n = 3,
                                           .responses = out },
                                       &err),
                     PK_EINVAL);
    assert_non_null(strstr(err.msg, "request 1"));
    assert_int_equal(pk_http_batch_run(pool, NULL, &err), PK_EINVAL);
    assert_int_equal(pk_http_batch_run(NULL, &(pk_http_batch){ .n = 0 },
                                       &err),
                     PK_EINVAL);
    assert_int_equal(pk_http_batch_run(pool, &(pk_http_batch){ .n = 0 },
                                       &err),
                     0);
    pk_http_pool_destroy(pool);
}

int
main(void)
{
    const char *required = getenv("PK_HTTP_REQUIRED");
    int must = required && strcmp(required, "1") == 0;
    char cmd[PATH_MAX + 64];

    if (find_script() != 0) {
        printf("test_http: skip: tests/support/http_server.sh not found\n");
        return must;
    }
    snprintf(cmd, sizeof cmd, "bash '%s' probe - >/dev/null", script);
    int st = system(cmd);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("test_http: skip: nginx is not installed (apt-get install "
               "nginx)%s\n",
               must ? "; PK_HTTP_REQUIRED=1, so this is a failure" : "");
        return must;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequential_requests_use_one_connection),
        cmocka_unit_test(test_threads_share_at_most_the_cap),
        cmocka_unit_test(test_connection_closed_by_server_is_not_lent),
        cmocka_unit_test(test_post_is_never_sent_twice),
        cmocka_unit_test(test_acquire_times_out_at_the_cap),
        cmocka_unit_test(test_release_resets_what_the_borrower_set),
        cmocka_unit_test(test_cookies_do_not_leak_unless_shared),
        cmocka_unit_test(test_total_cap_moves_to_the_origin_that_waits),
        cmocka_unit_test(test_tls_verifies_and_loads_the_ca_once),
        cmocka_unit_test(test_http2_on_request),
        cmocka_unit_test(test_limits_streams_and_redirects),
        cmocka_unit_test(test_fork_child_destroy_leaves_parent_connection_alive),
        cmocka_unit_test(test_bad_input_is_a_clear_error),
        cmocka_unit_test(test_batch_reuses_the_pools_connections),
        cmocka_unit_test(test_keep_alive_header_retires_early),
        cmocka_unit_test(test_prewarm_opens_connections_ahead),
        cmocka_unit_test(test_stalled_origin_holds_only_its_share),
        cmocka_unit_test(test_nginx_reload_and_restart_under_load),
        cmocka_unit_test(test_batch_reports_each_failure),
        cmocka_unit_test(test_batch_runs_in_parallel_from_cold),
    };
    return cmocka_run_group_tests_name("http", tests, group_setup,
                                       group_teardown);
}
