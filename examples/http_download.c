/* examples/http_download.c - "download these links" for real: HTTP
 * requests on a thread pool, sharing one pool of connections.
 *
 *   http_download              links on a throwaway local nginx
 *   http_download URL...       your links (http:// or https://)
 *
 * The links are fetched twice. First one after the other, from this
 * thread; then by 8 tasks on a pk_threadpool, all calling pk_http_exec on
 * one shared pk_http_pool, with the futures waited for in input order, so
 * the results print in the order of the links whatever order they finish
 * in. Each run has a fresh pk_http_pool, so both start without
 * connections; after each, the pool's stats say how many connections it
 * opened and how many requests reused one. A new libcurl handle per
 * request would open a connection (and do a TLS handshake) every time.
 *
 * Without URLs it starts nginx on loopback through
 * tests/support/http_server.sh (examples/support/throwaway_http.c; it is
 * removed at the end, Ctrl-C included) and downloads 20 links from it
 * over HTTPS, verifying the server's certificate against the CA file the
 * script made. A server on loopback answers at once, so to look like the
 * internet, where a download mostly waits, seven links ask for the first
 * 40-96 KiB of /slow (a Range header), which nginx sends at 64 KiB/s
 * after a first burst (each takes 0.5-1 s); the others are small pages,
 * two redirects (the pool follows them, same origin) and three 10 MiB
 * files. Waits overlap on threads, so the pooled run takes about as long
 * as its slowest link.
 *
 * Exit status: 0 when every link was fetched both ways (any HTTP status
 * counts: it is the server's answer), 1 if a request failed (each failure
 * is printed) or the server would not start, 2 on a usage error or when
 * there is nothing to download (no URLs and no nginx: it says how to run
 * it). */
#include <poolkit/http.h>
#include <poolkit/threadpool.h>

#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support/throwaway_http.h"

#define THREADS 8
#define MAX_LINKS 256
#define REQUEST_MS 30000 /* one link: waiting for a handle and every try */

struct link {
    char url[1024];
    char range[48]; /* "Range: bytes=0-N", or "" */
};

/* One download: what the task (or the loop) filled in. */
struct download {
    pk_http_pool *pool;
    const struct link *link;
    int rc;          /* pk_http_exec's code */
    long status;     /* the HTTP status of the last response */
    size_t bytes;    /* body bytes */
    int reused;      /* over a connection an earlier request made */
    double ms;       /* how long pk_http_exec took */
    pk_error err;    /* rc != 0: why */
};

/* The local links: a path of the throwaway nginx and, for /slow, how many
 * KiB to ask for (nginx sends the first 32 or so at once, then the rest at
 * 64 KiB/s in steps of half a second). */
static const struct {
    const char *path;
    int kib;
} local_links[] = {
    { "/", 0 },      { "/slow", 64 }, { "/big", 0 },   { "/", 0 },
    { "/slow", 48 }, { "/redirect", 0 }, { "/", 0 },   { "/slow", 80 },
    { "/big", 0 },   { "/", 0 },      { "/slow", 40 }, { "/", 0 },
    { "/slow", 96 }, { "/redirect", 0 }, { "/", 0 },   { "/slow", 56 },
    { "/big", 0 },   { "/", 0 },      { "/slow", 72 }, { "/", 0 },
};
#define N_LOCAL (sizeof local_links / sizeof local_links[0])

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Fetches d->link over d->pool; the outcome goes into d. Returns d->rc. */
static int
fetch(struct download *d)
{
    const char *headers[] = { d->link->range, NULL };
    pk_http_response r;
    double t0 = now_s();

    d->err.msg[0] = '\0';
    d->rc = pk_http_exec(d->pool, &(pk_http_request){
                             .url = d->link->url,
                             .headers = d->link->range[0] ? headers : NULL,
                             .timeout_ms = REQUEST_MS },
                         &r, &d->err);
    d->ms = (now_s() - t0) * 1e3;
    d->status = r.status;
    d->bytes = r.body_len;
    d->reused = r.reused;
    pk_http_response_free(&r); /* a download would save the body here */
    return d->rc;
}

/* The thread pool's task (a pk_task_fn): one download. A failure fails
 * the future with pk_http_exec's code and message. */
static int
download_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    struct download *d = arg;

    (void)self;
    (void)out; /* the figures are in *d */
    if (fetch(d) != 0 && err)
        *err = d->err;
    return d->rc;
}

static void
print_download(const struct download *d, int rc, const pk_error *err)
{
    const struct link *l = d->link;

    if (rc) {
        printf("  FAILED %s: %s (%s)\n", l->url, err->msg[0] ? err->msg
                                                           : pk_strerror(rc),
               pk_err_name(rc));
        return;
    }
    printf("  %3ld %9zu B %7.1f ms  %-6s  %s", d->status, d->bytes, d->ms,
           d->reused ? "reused" : "new", l->url);
    if (l->range[0])
        printf("  (%s)", l->range);
    putchar('\n');
}

/* A pool for one run: fresh, so its stats are that run's. */
static int
pool_make(pk_http_pool **pool, const char *ca_file)
{
    pk_error err;
    int rc = pk_http_pool_create(pool, &(pk_http_options){
                                     .max_per_origin = THREADS,
                                     .max_redirects = 3,
                                     .ca_file = ca_file },
                                 &err);
    if (rc)
        fprintf(stderr, "http_download: pk_http_pool_create: %s: %s\n",
                pk_strerror(rc), err.msg);
    return rc;
}

static void
print_stats(pk_http_pool *pool)
{
    pk_http_stats st;

    if (pk_http_stats_get(pool, NULL, &st) != 0)
        return;
    printf("  pool: %" PRIu64 " requests, %" PRIu64 " connection%s opened, "
           "%" PRIu64 " reused", st.requests, st.connections_new,
           st.connections_new == 1 ? "" : "s", st.connections_reused);
    if (st.tls_handshakes)
        printf("; %" PRIu64 " TLS handshake%s (%" PRIu64 " resumed)",
               st.tls_handshakes, st.tls_handshakes == 1 ? "" : "s",
               st.tls_resumed);
    printf("; transfer p50 %.1f ms, p99 %.1f ms\n",
           (double)st.transfer_p50_us / 1e3, (double)st.transfer_p99_us / 1e3);
}

/* One after the other, on this thread. Returns the failures, or -1 if
 * the pool could not be made; *secs gets the wall time. */
static long
run_sequential(const struct link *links, size_t n, const char *ca_file,
               double *secs)
{
    static struct download d[MAX_LINKS];
    pk_http_pool *pool;
    long failed = 0;
    double t0;

    if (pool_make(&pool, ca_file) != 0)
        return -1;
    t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        d[i] = (struct download){ .pool = pool, .link = &links[i] };
        failed += fetch(&d[i]) != 0;
        print_download(&d[i], d[i].rc, &d[i].err);
    }
    *secs = now_s() - t0;
    print_stats(pool);
    pk_http_pool_destroy(pool);
    return failed;
}

/* Submits every link, then waits for each future in input order and
 * prints its result. Returns the failures. */
static long
submit_and_wait(pk_threadpool *tp, struct download *d, size_t n)
{
    static pk_future *futs[MAX_LINKS];
    size_t submitted = 0;
    long failed = 0;

    for (; submitted < n; submitted++) {
        int rc = pk_threadpool_submit(tp, download_task, &d[submitted],
                                      &futs[submitted]);
        if (rc) {
            fprintf(stderr, "http_download: pk_threadpool_submit: %s\n",
                    pk_strerror(rc));
            break;
        }
    }
    failed += (long)(n - submitted);
    for (size_t i = 0; i < submitted; i++) {
        pk_error err = { 0 };
        /* Each request ends by REQUEST_MS; the margin is a safety net. */
        int rc = pk_future_get(futs[i], REQUEST_MS + 5000, NULL, &err);
        print_download(&d[i], rc, &err);
        failed += rc != 0;
        pk_future_release(futs[i]);
    }
    return failed;
}

/* The same links by THREADS tasks on a pk_threadpool sharing one
 * pk_http_pool. Returns the failures, or -1 if a pool could not be
 * made; *secs gets the wall time. */
static long
run_pooled(const struct link *links, size_t n, const char *ca_file,
           double *secs)
{
    static struct download d[MAX_LINKS];
    pk_threadpool *tp;
    pk_http_pool *pool;
    long failed;
    double t0;
    int rc;

    if (pool_make(&pool, ca_file) != 0)
        return -1;
    rc = pk_threadpool_create(&tp, &(pk_threadpool_options){
                                  .min_threads = THREADS,
                                  .max_threads = THREADS });
    if (rc) {
        fprintf(stderr, "http_download: pk_threadpool_create: %s\n",
                pk_strerror(rc));
        pk_http_pool_destroy(pool);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        d[i] = (struct download){ .pool = pool, .link = &links[i] };
    t0 = now_s();
    failed = submit_and_wait(tp, d, n);
    *secs = now_s() - t0;
    pk_threadpool_destroy(tp); /* every task has finished: joins workers */
    print_stats(pool);
    pk_http_pool_destroy(pool);
    return failed;
}

static int
usage(FILE *f, int status)
{
    fprintf(f,
            "usage: http_download [URL...]\n"
            "Downloads the links one after the other, then on a thread pool "
            "of %d\nsharing one pk_http_pool, and prints each result, both "
            "wall times and\nthe pool's connection counts. Without URLs it "
            "downloads from a throwaway\nnginx it starts "
            "(tests/support/http_server.sh, from poolkit's source tree).\n",
            THREADS);
    return status;
}

/* The links: the command line's, or the throwaway server's (started into
 * *srv, *started set). Returns 0, or the exit status to end with. */
static int
links_get(int argc, char **argv, struct link *links, size_t *n,
          struct throwaway_http *srv, int *started)
{
    char why[256];
    int rc;

    *started = 0;
    if (argc > 1) {
        if ((size_t)argc - 1 > MAX_LINKS) {
            fprintf(stderr, "http_download: at most %d links\n", MAX_LINKS);
            return 2;
        }
        for (int i = 1; i < argc; i++) {
            if (strncmp(argv[i], "http://", 7) != 0 &&
                strncmp(argv[i], "https://", 8) != 0) {
                fprintf(stderr, "http_download: '%s' is not an http:// or "
                        "https:// URL\n", argv[i]);
                return usage(stderr, 2);
            }
            snprintf(links[i - 1].url, sizeof links[i - 1].url, "%s",
                     argv[i]);
            links[i - 1].range[0] = '\0';
        }
        *n = (size_t)argc - 1;
        return 0;
    }
    rc = throwaway_http_start(srv, why, sizeof why);
    if (rc == THROWAWAY_ABSENT) {
        fprintf(stderr,
                "http_download: nothing to download: no links given, and no "
                "local server:\n  %s\nGive it links, for example\n"
                "  http_download https://example.org/ https://example.com/\n"
                "or install nginx (apt-get install nginx) and run it from "
                "poolkit's source tree:\nit then starts a throwaway nginx of "
                "its own.\n", why);
        return 2;
    }
    if (rc != THROWAWAY_OK) {
        fprintf(stderr, "http_download: starting a throwaway nginx: %s\n",
                why);
        return 1;
    }
    *started = 1;
    for (size_t i = 0; i < N_LOCAL; i++) {
        snprintf(links[i].url, sizeof links[i].url, "https://127.0.0.1:%d%s",
                 srv->https_port, local_links[i].path);
        links[i].range[0] = '\0';
        if (local_links[i].kib)
            snprintf(links[i].range, sizeof links[i].range,
                     "Range: bytes=0-%d", local_links[i].kib * 1024 - 1);
    }
    *n = N_LOCAL;
    printf("server: a throwaway nginx on 127.0.0.1:%d (HTTPS; CA %s)\n\n",
           srv->https_port, srv->ca_file);
    return 0;
}

int
main(int argc, char **argv)
{
    static struct link links[MAX_LINKS];
    struct throwaway_http srv;
    size_t n = 0;
    double seq_s = 0, pool_s = 0;
    long seq_failed, pool_failed;
    int started, rc;

    if (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
                      strcmp(argv[1], "--help") == 0))
        return usage(stdout, 0);
    /* A peer that closes a socket must not end us with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    rc = links_get(argc, argv, links, &n, &srv, &started);
    if (rc)
        return rc;

    printf("%zu downloads, one after the other:\n", n);
    seq_failed = run_sequential(links, n, started ? srv.ca_file : NULL,
                                &seq_s);
    printf("\nthe same %zu downloads by %d tasks on a pk_threadpool, one "
           "shared pk_http_pool\n(results in input order):\n", n, THREADS);
    pool_failed = run_pooled(links, n, started ? srv.ca_file : NULL,
                             &pool_s);
    if (started)
        throwaway_http_stop(&srv);

    if (seq_failed >= 0)
        printf("\n%-12s %6.3f s\n", "sequential:", seq_s);
    if (pool_failed >= 0) {
        char label[32];
        snprintf(label, sizeof label, "%d threads:", THREADS);
        printf("%-12s %6.3f s\n", label, pool_s);
    }
    if (seq_failed == 0 && pool_failed == 0 && pool_s > 0)
        printf("%-12s %6.1f\xc3\x97 (a download mostly waits, and the "
               "threads overlap the waits)\n", "speed-up:", seq_s / pool_s);
    if (seq_failed || pool_failed) {
        fprintf(stderr, "http_download: %ld sequential and %ld pooled "
                "download(s) failed\n",
                seq_failed < 0 ? (long)n : seq_failed,
                pool_failed < 0 ? (long)n : pool_failed);
        return 1;
    }
    return 0;
}
