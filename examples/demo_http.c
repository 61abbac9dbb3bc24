/* examples/demo_http.c - poolkit-demo's HTTP rows.
 *
 *   http   a GET of / on a libcurl easy handle made for it
 *          (curl_easy_init, curl_easy_perform, curl_easy_cleanup: a new
 *          connection each time) vs the same GET through pk_http_exec on
 *          a pool, which keeps the handle and its connection alive
 *   https  the same over TLS: a new handle also pays for the handshake
 *          and for reading the CA file into a fresh TLS context
 *
 * The server is a throwaway nginx on loopback
 * (examples/support/throwaway_http.c, through tests/support/http_server.sh)
 * that the first http row starts and demo_http_finish removes after the
 * last; a guard process removes it if the demo ends any other way
 * (Ctrl-C). Its certificate is self-signed, made on the fly: both ways
 * are given that CA file (CURLOPT_CAINFO, pk_http_options.ca_file), so
 * both verify the server as a real client would.
 *
 * The pool is the one a single-threaded program would make: one handle
 * per origin (max_per_origin 1). The per-use way sets only what a
 * careful program sets on a new handle: the URL, the CA file, no
 * signals, timeouts, and a write callback.
 *
 * Built without libcurl (the Makefile compiles this file with
 * -DPK_DEMO_HTTP only when the http adapter builds), the rows say skipped
 * and how to get them. */
#include "demo_rows.h"

#ifdef PK_DEMO_HTTP

#include <curl/curl.h>
#include <poolkit/http.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "support/throwaway_http.h"

#define REQUEST_MS 10000 /* no demo request comes near it */

/* The server, started by the first http row and kept for the other. Only
 * the demo's main thread touches it. */
static struct {
    int looked;                 /* server_find ran */
    int ok;                     /* a server is there */
    int skip;                   /* none is: skip with why */
    char why[256];              /* not ok: why (a skip) or what failed */
    struct throwaway_http http; /* the throwaway nginx */
} srv;

static void
server_find(void)
{
    char why[200];
    int rc;

    srv.looked = 1;
    rc = throwaway_http_start(&srv.http, why, sizeof why);
    srv.ok = rc == THROWAWAY_OK;
    if (rc == THROWAWAY_ABSENT) {
        /* libcurl is here (this file was built): http_server.sh's
         * message names what is still missing. */
        snprintf(srv.why, sizeof srv.why, "%s, then make demo",
                 why[0] ? why : "nginx not found (apt-get install nginx)");
        srv.skip = 1;
    } else if (rc != THROWAWAY_OK) {
        snprintf(srv.why, sizeof srv.why, "starting a throwaway nginx: %s",
                 why);
    }
}

void
demo_http_finish(void)
{
    if (srv.looked && srv.ok)
        throwaway_http_stop(&srv.http);
    srv.ok = 0;
}

struct http_row {
    int tls;
    char url[64];
    pk_http_pool *pool;
    struct demo_result *out;
};

/* The start of a response body, for the check. */
struct body {
    char buf[16];
    size_t len;
};

static size_t
body_write(char *p, size_t size, size_t nmemb, void *arg)
{
    struct body *b = arg;
    size_t n = size * nmemb, room = sizeof b->buf - 1 - b->len;

    memcpy(b->buf + b->len, p, n < room ? n : room);
    b->len += n < room ? n : room;
    b->buf[b->len] = '\0';
    return n;
}

/* The answer to GET / must be 200 "hello\n". */
static int
check_hello(struct http_row *r, long status, const char *body,
            const char *how)
{
    if (status == 200 && body && strcmp(body, "hello\n") == 0)
        return 0;
    demo_note(r->out, "%s: GET %s answered %ld, not 200 \"hello\"", how,
              r->url, status);
    return -1;
}

static int
http_per_use(void *arg)
{
    struct http_row *r = arg;
    char errbuf[CURL_ERROR_SIZE] = "";
    struct body b = { "", 0 };
    CURL *e = curl_easy_init();
    CURLcode c = CURLE_OUT_OF_MEMORY;
    long status = 0;

    if (e) {
        curl_easy_setopt(e, CURLOPT_URL, r->url);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)REQUEST_MS);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)REQUEST_MS);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_write);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
        if (r->tls)
            curl_easy_setopt(e, CURLOPT_CAINFO, srv.http.ca_file);
        c = curl_easy_perform(e);
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(e);
    }
    if (c != CURLE_OK) {
        demo_note(r->out, "curl_easy_perform: %s",
                  errbuf[0] ? errbuf : curl_easy_strerror(c));
        return -1;
    }
    return check_hello(r, status, b.buf, "curl_easy_perform");
}

static int
http_pooled(void *arg)
{
    struct http_row *r = arg;
    pk_http_response resp;
    pk_error err;
    int rc;

    err.msg[0] = '\0';
    rc = pk_http_exec(r->pool, &(pk_http_request){ .url = r->url,
                                                    .timeout_ms = REQUEST_MS },
                      &resp, &err);
    if (rc) {
        demo_note(r->out, "pk_http_exec: %s%s%s", pk_strerror(rc),
                  err.msg[0] ? ": " : "", err.msg);
        pk_http_response_free(&resp);
        return -1;
    }
    rc = check_hello(r, resp.status, resp.body, "pk_http_exec");
    pk_http_response_free(&resp);
    return rc;
}

/* What the pool did, under the table: it opened a connection or two and
 * reused them for every other request. */
static void
note_stats(struct http_row *r)
{
    pk_http_stats st;

    if (pk_http_stats_get(r->pool, NULL, &st) != 0)
        return;
    if (r->tls)
        demo_note(r->out, "pooled: %" PRIu64 " TLS handshake%s for %" PRIu64
                  " requests; per use: one a request, each new handle "
                  "reading the CA file (CURLOPT_CAINFO) into a new TLS "
                  "context", st.tls_handshakes,
                  st.tls_handshakes == 1 ? "" : "s", st.requests);
    else
        demo_note(r->out, "a throwaway nginx on loopback; pooled: "
                  "pk_http_exec on a pool of 1 handle, %" PRIu64
                  " connection%s opened for %" PRIu64 " requests",
                  st.connections_new, st.connections_new == 1 ? "" : "s",
                  st.requests);
}

static int
http_row_run(struct demo_ctx *ctx, struct demo_result *out, int tls)
{
    struct http_row r = { .tls = tls, .out = out };
    pk_error err;
    int rc;

    if (!srv.looked)
        server_find();
    if (!srv.ok) {
        out->skipped = srv.skip;
        demo_note(out, "%s", srv.why);
        return srv.skip ? 0 : -1;
    }
    snprintf(r.url, sizeof r.url, "%s://127.0.0.1:%d/", tls ? "https" : "http",
             tls ? srv.http.https_port : srv.http.http_port);
    err.msg[0] = '\0';
    rc = pk_http_pool_create(&r.pool, &(pk_http_options){
                                 .max_per_origin = 1,
                                 .ca_file = srv.http.ca_file },
                             &err);
    if (rc) {
        demo_note(out, "pk_http_pool_create: %s: %s", pk_strerror(rc),
                  err.msg);
        return -1;
    }
    /* One request first: the pool opens its connection (and does its TLS
     * handshake) here, or says why it cannot. Otherwise that first,
     * slow request would size demo_measure's pooled batches (a few
     * requests each instead of ~10 ms of them). */
    rc = http_pooled(&r);
    demo_setup_done(ctx); /* the server's start is not the row's time */
    if (rc == 0)
        rc = demo_measure(ctx, &(struct demo_pair){ http_per_use,
                                                    http_pooled, &r },
                          out);
    if (rc == 0)
        note_stats(&r);
    pk_http_pool_destroy(r.pool);
    return rc;
}

int
demo_row_http(struct demo_ctx *ctx, struct demo_result *out)
{
    return http_row_run(ctx, out, 0);
}

int
demo_row_https(struct demo_ctx *ctx, struct demo_result *out)
{
    return http_row_run(ctx, out, 1);
}

#else /* !PK_DEMO_HTTP: built without libcurl */

static int
http_skipped(struct demo_ctx *ctx, struct demo_result *out)
{
    (void)ctx;
    out->skipped = 1;
    demo_note(out, "poolkit-demo was built without libcurl (the http "
              "adapter was off): apt-get install nginx libcurl4-openssl-dev "
              "libssl-dev, then make demo");
    return 0;
}

int
demo_row_http(struct demo_ctx *ctx, struct demo_result *out)
{
    return http_skipped(ctx, out);
}

int
demo_row_https(struct demo_ctx *ctx, struct demo_result *out)
{
    return http_skipped(ctx, out);
}

void
demo_http_finish(void)
{
}

#endif /* PK_DEMO_HTTP */
