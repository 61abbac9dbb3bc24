/* adapters/http/handle.c - one easy handle: its record, the pool's
 * defaults, the response capture, the liveness check and what a CURLcode
 * means (http_int.h).
 *
 * Defaults. After curl_easy_reset a handle has libcurl's defaults again,
 * Debian's built-in CA bundle path included; the pool's are applied on
 * top each time, CURLOPT_CAINFO and CAPATH cleared when the pool installs
 * its own CA store through CURLOPT_SSL_CTX_FUNCTION. */
#include "http_int.h"

#include <openssl/ssl.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- capture ------------------------------------------------------------------ */

static int
append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t want = *cap ? *cap : 1024;
        while (want < *len + n + 1)
            want *= 2;
        char *b = realloc(*buf, want);
        if (!b)
            return -1;
        *buf = b;
        *cap = want;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

/* Returning less than n stops the transfer (CURLE_WRITE_ERROR). */
static size_t
on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct pk__http_handle *h = arg;
    struct pk__http_capture *c = h->cap;
    size_t n = size * nmemb;

    if (!c)
        return n; /* nobody asked for it */
    if (c->on_data) {
        if (c->on_data(c->on_data_user, p, n) != 0) {
            c->stopped = 1;
            return 0;
        }
        c->streamed += n;
        return n;
    }
    if (c->body_len + n > c->max_body) {
        c->too_big = 1;
        return 0;
    }
    if (append(&c->body, &c->body_len, &c->body_cap, p, n) != 0) {
        c->no_memory = 1;
        return 0;
    }
    return n;
}

/* "Keep-Alive: timeout=5, max=100": the server closes an idle connection
 * after 5 s. */
static void
read_keepalive(struct pk__http_handle *h, const char *p, size_t n)
{
    static const char name[] = "keep-alive:";
    if (n < sizeof name || strncasecmp(p, name, sizeof name - 1) != 0)
        return;
    char line[128];
    size_t k = n < sizeof line - 1 ? n : sizeof line - 1;
    memcpy(line, p, k);
    line[k] = '\0';
    const char *t = strstr(line, "timeout=");
    if (t) {
        long s = strtol(t + 8, NULL, 10);
        if (s > 0 && s < 86400)
            h->keepalive_ms = (int)s * 1000;
    }
}

/* Whether this transfer's TLS session was resumed: only while the
 * transfer runs does libcurl show its SSL *. */
static int
tls_resumed(CURL *e)
{
    struct curl_tlssessioninfo *ti = NULL;
    return curl_easy_getinfo(e, CURLINFO_TLS_SSL_PTR, &ti) == CURLE_OK && ti &&
           ti->backend == CURLSSLBACKEND_OPENSSL && ti->internals &&
           SSL_session_reused(ti->internals);
}

static size_t
on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    struct pk__http_handle *h = arg;
    struct pk__http_capture *c = h->cap;
    size_t n = size * nmemb;

    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        h->keepalive_ms = 0; /* a new response: only its own headers */
        h->tls_resumed = tls_resumed(h->easy);
        if (c)
            c->headers_len = 0;
    }
    read_keepalive(h, p, n);
    if (c && append(&c->headers, &c->headers_len, &c->headers_cap, p, n)) {
        c->no_memory = 1;
        return 0;
    }
    return n;
}

/* ---- the connection's socket --------------------------------------------------- */

/* libcurl closes the handle's sockets through this, so the record never
 * keeps a socket number that may be reused for another file. */
static int
on_close_socket(void *arg, curl_socket_t fd)
{
    struct pk__http_handle *h = arg;
    if (h->sock == fd)
        h->sock = -1;
    return close(fd);
}

/* ---- defaults ------------------------------------------------------------------ */

/* Each new TLS connection gets the pool's one CA store instead of parsing
 * the bundle again. */
static CURLcode
on_ssl_ctx(CURL *easy, void *ssl_ctx, void *store)
{
    (void)easy;
    SSL_CTX_set1_cert_store(ssl_ctx, store);
    return CURLE_OK;
}

static int
apply(struct pk__http_handle *h, const struct pk__http_conf *c)
{
    CURL *e = h->easy;
    CURLcode rc = CURLE_OK;

#define SET(opt, val) \
    (rc = rc != CURLE_OK ? rc : curl_easy_setopt(e, opt, val))
    SET(CURLOPT_SHARE, c->share);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_MAXCONNECTS, 1L);
    SET(CURLOPT_ERRORBUFFER, h->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, h);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, h);
    SET(CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    SET(CURLOPT_CLOSESOCKETDATA, h);
    SET(CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, c->transfer_timeout_ms);
    SET(CURLOPT_USERAGENT, c->user_agent);
    SET(CURLOPT_HTTP_VERSION, c->http2 ? (long)CURL_HTTP_VERSION_2TLS
                                       : (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_SSL_VERIFYPEER, c->insecure ? 0L : 1L);
    SET(CURLOPT_SSL_VERIFYHOST, c->insecure ? 0L : 2L);
    if (c->proxy)
        SET(CURLOPT_PROXY, c->proxy);
    void *store = atomic_load_explicit(&c->store, memory_order_acquire);
    if (store) {
        SET(CURLOPT_CAINFO, (char *)NULL);
        SET(CURLOPT_CAPATH, (char *)NULL);
        SET(CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
        SET(CURLOPT_SSL_CTX_DATA, store);
    } else {
        if (c->ca_file)
            SET(CURLOPT_CAINFO, c->ca_file);
        if (c->ca_path)
            SET(CURLOPT_CAPATH, c->ca_path);
    }
    if (c->share_cookies)
        SET(CURLOPT_COOKIEFILE, ""); /* the engine on, cookies shared */
#undef SET
    h->errbuf[0] = '\0';
    return rc == CURLE_OK ? 0 : -1;
}

struct pk__http_handle *
pk__http_handle_new(const struct pk__http_conf *conf,
                    struct pk__http_origin *o)
{
    struct pk__http_handle *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->easy = curl_easy_init();
    h->multi = curl_multi_init();
    h->origin = o;
    h->sock = -1;
    if (!h->easy || !h->multi ||
        curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 1L) != CURLM_OK ||
        apply(h, conf) != 0) {
        pk__http_handle_free(h);
        return NULL;
    }
    return h;
}

void
pk__http_handle_free(struct pk__http_handle *h)
{
    if (!h)
        return;
    if (h->easy) {
        curl_easy_setopt(h->easy, CURLOPT_COOKIEFILE, (char *)NULL);
        curl_easy_cleanup(h->easy);
    }
    if (h->multi)
        curl_multi_cleanup(h->multi); /* closes its connection */
    free(h);
}

/* What set_request (request.c) may have set, back to conf. */
static int
undo_request(struct pk__http_handle *h, const struct pk__http_conf *c)
{
    CURL *e = h->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) \
    (rc = rc != CURLE_OK ? rc : curl_easy_setopt(e, opt, val))
    SET(CURLOPT_NOBODY, 0L);
    SET(CURLOPT_CUSTOMREQUEST, (char *)NULL);
    SET(CURLOPT_POSTFIELDS, (char *)NULL);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
    SET(CURLOPT_HTTPGET, 1L);
    SET(CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    SET(CURLOPT_FRESH_CONNECT, 0L);
    SET(CURLOPT_TIMEOUT_MS, c->transfer_timeout_ms);
#undef SET
    h->errbuf[0] = '\0';
    return rc == CURLE_OK ? 0 : -1;
}

int
pk__http_handle_reset(struct pk__http_handle *h,
                      const struct pk__http_conf *conf)
{
    h->idle_since = pk_clock_ns();
    h->cap = NULL;
    if (!h->raw)
        return undo_request(h, conf);
    h->raw = 0;
    if (!conf->share_cookies)
        curl_easy_setopt(h->easy, CURLOPT_COOKIELIST, "ALL");
    /* A cookie file the borrower named and no transfer loaded stays on a
     * list curl_easy_reset keeps (and libcurl 7.88 never frees). */
    curl_easy_setopt(h->easy, CURLOPT_COOKIEFILE, (char *)NULL);
    curl_easy_reset(h->easy);
    return apply(h, conf);
}

/* ---- a transfer through the handle's own multi handle --------------------------- */

CURLcode
pk__http_handle_run(struct pk__http_handle *h)
{
    CURLMcode mc = curl_multi_add_handle(h->multi, h->easy);
    if (mc != CURLM_OK)
        return mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY
                                         : CURLE_FAILED_INIT;
    int running = 1;
    while (running && mc == CURLM_OK) {
        mc = curl_multi_perform(h->multi, &running);
        if (running && mc == CURLM_OK)
            mc = curl_multi_poll(h->multi, NULL, 0, 1000, NULL);
    }
    CURLcode rc = pk__http_handle_done(h);
    if (rc == CURLE_OK && mc != CURLM_OK)
        rc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY
                                       : CURLE_RECV_ERROR;
    return rc;
}

CURLcode
pk__http_handle_done(struct pk__http_handle *h)
{
    CURLcode rc = CURLE_RECV_ERROR; /* no result: the transfer vanished */
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left)) != NULL)
        if (m->msg == CURLMSG_DONE && m->easy_handle == h->easy)
            rc = m->data.result;
    /* The kept connection's socket, while the handle is still in the
     * multi handle whose cache holds it (the check polls it; a forked
     * child closes it). */
    curl_socket_t s = CURL_SOCKET_BAD;
    if (curl_easy_getinfo(h->easy, CURLINFO_ACTIVESOCKET, &s) != CURLE_OK)
        s = CURL_SOCKET_BAD;
    h->sock = s == CURL_SOCKET_BAD ? -1 : (int)s;
    curl_multi_remove_handle(h->multi, h->easy); /* the connection stays */
    return rc;
}

int
pk__http_handle_warm(struct pk__http_handle *h, const char *url,
                     const char *method, pk_error *err)
{
    CURL *e = h->easy;
    if (curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK ||
        (strcmp(method, "HEAD") == 0
             ? curl_easy_setopt(e, CURLOPT_NOBODY, 1L)
             : curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method)) !=
            CURLE_OK)
        return pk_error_set(err, PK_ENOMEM, 0, "warming %s: out of memory",
                            url);
    CURLcode rc = pk__http_handle_run(h); /* no capture: body dropped */
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    if (rc != CURLE_OK) {
        pk__http_set_error(err, rc, h, url);
        return -1;
    }
    return 0;
}

/* ---- health ---------------------------------------------------------------------- */

int
pk__http_handle_stale(const struct pk__http_handle *h)
{
    if (h->sock < 0)
        return 0;
    /* A second's margin: the server's timer and ours do not start at the
     * same instant, and a request in flight when it fires is lost. */
    if (h->keepalive_ms > 0 &&
        pk_clock_ns() - h->idle_since + 1000000000u >=
            (uint64_t)h->keepalive_ms * 1000000u)
        return 1;
    struct pollfd p = { .fd = h->sock, .events = POLLIN, .revents = 0 };
    int n;
    do
        n = poll(&p, 1, 0);
    while (n < 0 && errno == EINTR);
    /* Idle, an HTTP/1.1 connection has nothing to say: readable means EOF,
     * a reset, or bytes that belong to no request. */
    return n != 0;
}

/* ---- what a CURLcode means -------------------------------------------------------- */

int
pk__http_code_broken(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
    case CURLE_HTTP_RETURNED_ERROR:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
        return 0;
    default:
        /* Connect, TLS, send, receive, timeouts, a transfer stopped
         * half-way (its connection holds unread bytes): close it. */
        return 1;
    }
}

int
pk__http_code_no_connection(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return 1;
    default:
        return 0;
    }
}

int
pk__http_code_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

static int
code_of(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        return PK_ECONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return PK_ETIMEDOUT;
    case CURLE_OUT_OF_MEMORY:
        return PK_ENOMEM;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return PK_EINVAL;
    default:
        return PK_EADAPTER;
    }
}

int
pk__http_set_error(pk_error *err, CURLcode rc,
                   const struct pk__http_handle *h, const char *url)
{
    const char *msg = h && h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc);
    return pk_error_set(err, code_of(rc), (int)rc, "%s: %s", url ? url : "",
                        msg);
}
