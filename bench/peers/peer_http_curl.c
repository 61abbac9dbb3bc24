/* peer_http_curl.c - plain libcurl, no pool, driven like bench_http
 * (bench/bench_http.c) for the http bench of issue #13.
 *
 *   peer_http_curl new|reuse <url> <threads> <warm_ms> <ms> [ca_file]
 *       rps= ns_per_req= requests= fair= min_thread= max_thread=
 *       cpu_ns_per_req= connections= threads= mode=
 *
 *   new    a new easy handle per request: curl_easy_init, the options,
 *          curl_easy_perform, curl_easy_cleanup. Nothing is kept between
 *          requests: no connection, no TLS session, no parsed CA file
 *          (what a program that makes a handle per request gets).
 *   reuse  one easy handle per thread, made before the clock starts and
 *          kept for all its requests: libcurl keeps its connection alive
 *          (and its TLS session and, since 7.87, its CA store), the best a
 *          careful programmer gets by hand. With several threads that is
 *          one private connection each.
 *
 * Both set the same options (peer_http_common.h, phb_curl_setup): the
 * URL, CURLOPT_NOSIGNAL, HTTP/1.1, the body into a per-thread buffer,
 * CURLOPT_CAINFO = ca_file when given (libcurl's other defaults stay,
 * Debian's CAPATH included, as in a program that sets only CAINFO).
 * The timing loop is peer_http_common.h's, the same code that times
 * poolkit. */
#include "peer_http_common.h"

struct cu_ctx {
    const char *url, *ca_file;
    int reuse;
};

struct cu_ts {
    CURL *e; /* reuse: the thread's handle */
    struct phb_buf body;
};

static void *
cu_thread_init(void *ctx, int index)
{
    struct cu_ctx *c = ctx;
    (void)index;
    struct cu_ts *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (c->reuse) {
        t->e = curl_easy_init();
        if (!t->e || phb_curl_setup(t->e, c->url, c->ca_file, &t->body)) {
            fprintf(stderr, "peer_http_curl: curl_easy_init or setopt "
                    "failed\n");
            curl_easy_cleanup(t->e);
            free(t);
            return NULL;
        }
    }
    return t;
}

static void
cu_thread_fini(void *ctx, void *ts)
{
    struct cu_ts *t = ts;
    (void)ctx;
    if (t->e)
        curl_easy_cleanup(t->e);
    free(t->body.p);
    free(t);
}

static int
cu_request(void *ctx, void *ts, long *connects)
{
    struct cu_ctx *c = ctx;
    struct cu_ts *t = ts;
    if (c->reuse)
        return phb_curl_perform("peer_http_curl", t->e, &t->body, connects);
    CURL *e = curl_easy_init();
    if (!e || phb_curl_setup(e, c->url, c->ca_file, &t->body)) {
        fprintf(stderr, "peer_http_curl: curl_easy_init or setopt failed\n");
        curl_easy_cleanup(e);
        return -1;
    }
    int rc = phb_curl_perform("peer_http_curl", e, &t->body, connects);
    curl_easy_cleanup(e);
    return rc;
}

static void
usage(FILE *to)
{
    fprintf(to, "usage: peer_http_curl new|reuse <url> <threads> <warm_ms> "
                "<ms> [ca_file]\n");
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
    struct cu_ctx c = { .url = argv[2], .ca_file = argc == 7 ? argv[6] : NULL,
                        .reuse = !strcmp(argv[1], "reuse") };
    long threads = phb_num(argv[3], 1), warm = phb_num(argv[4], 0),
         ms = phb_num(argv[5], 1);
    if ((!c.reuse && strcmp(argv[1], "new") != 0) || threads < 0 ||
        warm < 0 || ms < 0) {
        usage(stderr);
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
        phb_die("peer_http_curl: curl_global_init failed");
    struct phb_ops ops = { .ctx = &c, .thread_init = cu_thread_init,
                           .thread_fini = cu_thread_fini,
                           .request = cu_request };
    phb_run(&ops, (int)threads, (int)warm, (int)ms);
    printf(" mode=%s\n", argv[1]);
    curl_global_cleanup();
    return 0;
}
