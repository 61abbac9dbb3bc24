/* peer_http_common.h - the timing loop shared by bench/bench_http.c
 * (poolkit) and the libcurl peer driver of the http bench
 * (peer_http_curl.c), so every C client is timed by the same code;
 * peer_http_requests.py repeats it in Python.
 *
 * A driver supplies a struct phb_ops (per-thread state and one request)
 * and calls
 *
 *   phb_run(ops, threads, warm_ms, ms)
 *       `threads` threads start together (a barrier); each runs requests
 *       untimed for warm_ms (at least one), then times whole requests
 *       until `ms` more have passed (at least one): its own clock starts
 *       at a request's start and stops at its last request's end, so a
 *       slow request (a new HTTPS handle: ~25 ms) is never cut in two.
 *       Prints `rps=<sum of the threads' requests/s> ns_per_req=<1e9/rps>
 *       requests=<counted> fair=<least/most> min_thread= max_thread=
 *       cpu_ns_per_req=<the threads' CPU time in their timed parts /
 *       requests> connections=<connections opened, the whole run>
 *       threads=` (no newline: the driver may add keys). CPU time is
 *       CLOCK_THREAD_CPUTIME_ID, user and system, of the client threads
 *       only (on loopback it includes some of the kernel's work for the
 *       server's packets, the same for every client); a busy machine
 *       usually moves it less than the wall-clock rate.
 *
 * Each request must get status 200 and the body "hello\n" (nginx's `/`
 * in tests/support/http_server.sh); anything else fails the run, with the
 * reason on stderr. The helpers below give libcurl users the same body
 * buffer and checks.
 *
 * Header-only (static functions) because build.sh compiles each peer from
 * one file; needs libcurl and pthreads. */
#ifndef PEER_HTTP_COMMON_H
#define PEER_HTTP_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <curl/curl.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Most threads phb_run takes. */
#define PHB_THREADS_MAX 256
/* What `/` answers. */
#define PHB_BODY "hello\n"

struct phb_ops {
    void *ctx;
    /* Per-thread state; NULL is a failure (the reason on stderr). */
    void *(*thread_init)(void *ctx, int index);
    void (*thread_fini)(void *ctx, void *ts);
    /* One request, checked; 0 or -1 (the reason on stderr). Adds the
     * connections it opened to *connects. */
    int (*request)(void *ctx, void *ts, long *connects);
};

static inline int64_t
phb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t
phb_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static _Noreturn void
phb_die(const char *what)
{
    fprintf(stderr, "%s\n", what);
    exit(1);
}

/* ---- a response body, as a libcurl user keeps it ----------------------- */

/* Grows only: a thread keeps one for all its requests. */
struct phb_buf {
    char *p;
    size_t len, cap;
};

/* CURLOPT_WRITEFUNCTION with CURLOPT_WRITEDATA a struct phb_buf *. */
static size_t
phb_write(char *p, size_t size, size_t nmemb, void *arg)
{
    struct phb_buf *b = arg;
    size_t n = size * nmemb;
    if (b->len + n + 1 > b->cap) {
        size_t want = b->cap ? b->cap : 1024;
        while (want < b->len + n + 1)
            want *= 2;
        char *q = realloc(b->p, want);
        if (!q)
            return 0;
        b->p = q;
        b->cap = want;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

/* 0 if the status is 200 and the body is PHB_BODY; else -1 with why on
 * stderr. */
static inline int
phb_check(const char *who, long status, const char *body, size_t len)
{
    if (status == 200 && len == sizeof PHB_BODY - 1 &&
        memcmp(body, PHB_BODY, len) == 0)
        return 0;
    fprintf(stderr, "%s: unexpected response: status %ld, %zu body bytes\n",
            who, status, len);
    return -1;
}

/* The options every libcurl client here sets on a handle, pool or not:
 * the URL, no signals (threads), HTTP/1.1 (nginx's TLS port offers no h2
 * anyway), the body into b, the CA file when given (verification is on by
 * default). Returns 0 or -1. */
static inline int
phb_curl_setup(CURL *e, const char *url, const char *ca_file,
               struct phb_buf *b)
{
    CURLcode rc = CURLE_OK;
#define PHB_SET(opt, val) \
    (rc = rc != CURLE_OK ? rc : curl_easy_setopt(e, opt, val))
    PHB_SET(CURLOPT_URL, url);
    PHB_SET(CURLOPT_NOSIGNAL, 1L);
    PHB_SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    PHB_SET(CURLOPT_WRITEFUNCTION, phb_write);
    PHB_SET(CURLOPT_WRITEDATA, b);
    if (ca_file)
        PHB_SET(CURLOPT_CAINFO, ca_file);
#undef PHB_SET
    return rc == CURLE_OK ? 0 : -1;
}

/* curl_easy_perform on e and the check; adds CURLINFO_NUM_CONNECTS to
 * *connects. 0 or -1. */
static inline int
phb_curl_perform(const char *who, CURL *e, struct phb_buf *b,
                 long *connects)
{
    b->len = 0;
    CURLcode rc = curl_easy_perform(e);
    if (rc != CURLE_OK) {
        fprintf(stderr, "%s: curl_easy_perform: %s\n", who,
                curl_easy_strerror(rc));
        return -1;
    }
    long status = 0, n = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &n);
    *connects += n;
    return phb_check(who, status, b->p ? b->p : "", b->len);
}

/* ---- the loop ------------------------------------------------------------- */

struct phb_thread {
    const struct phb_ops *ops;
    pthread_barrier_t *go;
    int64_t warm_ns, run_ns;
    int index;
    int failed;
    long count, connects;
    int64_t t0, t1;
    int64_t cpu0, cpu1; /* CLOCK_THREAD_CPUTIME_ID at t0 and t1 */
};

static void *
phb_main(void *arg)
{
    struct phb_thread *t = arg;
    const struct phb_ops *o = t->ops;
    void *ts = o->thread_init(o->ctx, t->index);

    pthread_barrier_wait(t->go);
    if (!ts) {
        t->failed = 1;
        return NULL;
    }
    int64_t start = phb_now_ns();
    int64_t warm_end = start + t->warm_ns;
    do {
        if (o->request(o->ctx, ts, &t->connects) != 0) {
            t->failed = 1;
            goto out;
        }
    } while (phb_now_ns() < warm_end);
    t->cpu0 = phb_cpu_ns();
    t->t0 = phb_now_ns();
    int64_t end = t->t0 + t->run_ns;
    do {
        if (o->request(o->ctx, ts, &t->connects) != 0) {
            t->failed = 1;
            goto out;
        }
        t->count++;
    } while ((t->t1 = phb_now_ns()) < end);
    t->cpu1 = phb_cpu_ns();
out:
    o->thread_fini(o->ctx, ts);
    return NULL;
}

static inline void
phb_run(const struct phb_ops *ops, int threads, int warm_ms, int ms)
{
    static struct phb_thread t[PHB_THREADS_MAX];
    pthread_t tid[PHB_THREADS_MAX];
    pthread_barrier_t go;

    if (threads < 1 || threads > PHB_THREADS_MAX)
        phb_die("phb_run: bad thread count");
    pthread_barrier_init(&go, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) {
        t[i] = (struct phb_thread){ .ops = ops, .go = &go, .index = i,
                                    .warm_ns = (int64_t)warm_ms * 1000000,
                                    .run_ns = (int64_t)ms * 1000000 };
        if (pthread_create(&tid[i], NULL, phb_main, &t[i]) != 0)
            phb_die("pthread_create failed");
    }
    double rps = 0, cpu = 0;
    long total = 0, least = -1, most = 0, connects = 0;
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        failed |= t[i].failed;
        if (t[i].failed)
            continue;
        rps += (double)t[i].count * 1e9 / (double)(t[i].t1 - t[i].t0);
        total += t[i].count;
        cpu += (double)(t[i].cpu1 - t[i].cpu0);
        connects += t[i].connects;
        if (least < 0 || t[i].count < least)
            least = t[i].count;
        if (t[i].count > most)
            most = t[i].count;
    }
    pthread_barrier_destroy(&go);
    if (failed)
        phb_die("a request failed (see above)");
    printf("rps=%.1f ns_per_req=%.0f requests=%ld fair=%.3f min_thread=%ld "
           "max_thread=%ld cpu_ns_per_req=%.0f connections=%ld threads=%d",
           rps, 1e9 / rps, total, most ? (double)least / (double)most : 0.0,
           least, most, cpu / (double)total, connects, threads);
}

/* ---- the command line ---------------------------------------------------- */

/* A number no less than min (and below 2^31), or -1. */
static inline long
phb_num(const char *s, long min)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    return *s && *end == '\0' && v >= min && v <= 0x7fffffffL ? v : -1;
}

#endif /* PEER_HTTP_COMMON_H */
