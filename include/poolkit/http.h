/* poolkit/http.h - a pool of HTTP connections (libcurl easy handles),
 * built on pk_pool. Library libpoolkit-http, pkg-config poolkit-http.
 *
 * Each resource is a libcurl easy handle with the one connection it keeps
 * alive (CURLOPT_MAXCONNECTS 1). Each origin (scheme, host, port) is a
 * member pool of one pk_pool_group: at most max_per_origin handles per
 * origin and max_total in all, borrowers waiting in arrival order across
 * origins; at the total cap the group retires another origin's
 * longest-idle handle so a waiting origin can open one. libcurl reuses a
 * connection only through the handle that made it, so a program that
 * makes a handle per request reuses nothing; this pool keeps them.
 *
 * Shared between the pool's handles, under locks: DNS results and TLS
 * sessions (a CURLSH), and the CA store: parsed once per pool into one
 * OpenSSL X509_STORE installed through CURLOPT_SSL_CTX_FUNCTION, with
 * CURLOPT_CAINFO and CAPATH cleared so libcurl does not parse the bundle
 * again for every new connection (libcurl 7.88 with OpenSSL makes an
 * SSL_CTX per connection, and parsing Debian's CA bundle is nearly all of
 * a new HTTPS handle's cost). The connections themselves are never in a
 * shared cache: libcurl documents that as unsafe across threads.
 *
 * The hooks:
 *   create           curl_easy_init and the pool's defaults (no
 *                    connection yet: libcurl connects on the first
 *                    request);
 *   check            before lending a handle idle longer than
 *                    check_after_ms: its connection is retired if it has
 *                    been idle past the server's keep-alive (a
 *                    `Keep-Alive: timeout=N` response header, less one
 *                    second), and its socket is polled with a zero timeout
 *                    (EOF or unexpected data: the server closed it);
 *   reset            on release: curl_easy_reset (which keeps the
 *                    connection, DNS and TLS session caches), the pool's
 *                    defaults again, cookies cleared unless share_cookies;
 *   destroy          curl_easy_cleanup;
 *   forget_in_child  after fork(), in the child: close the connection's
 *                    socket only (no TLS close_notify; the parent's
 *                    connection goes on); the handle is leaked.
 *
 * Defaults suit a threaded client: 8 handles per origin (not Go's 2 idle
 * per host, which makes a 10-thread client reconnect constantly), 64 in
 * all, idle ones closed after 30 s or the server's keep-alive, whichever
 * comes first, a handle's connection replaced after 10 minutes (so DNS
 * changes and scale-out are followed), TLS verification on.
 *
 * Replays. libcurl 7.88 re-sends a request, POST included, when a reused
 * connection dies before the first response byte, and cannot be told not
 * to. So a request whose method is not idempotent (anything but GET,
 * HEAD, OPTIONS, TRACE, PUT, DELETE; RFC 9110) goes out on a fresh
 * connection (CURLOPT_FRESH_CONNECT) unless the request allows replay;
 * idempotent ones reuse connections and are retried once more after a
 * connection-level failure (options.retries).
 *
 * This header does not include <curl/curl.h>: a handle is a `void *`
 * that is libcurl's CURL *. */
#ifndef POOLKIT_HTTP_H
#define POOLKIT_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <poolkit/error.h>
#include <poolkit/event.h>
#include <poolkit/pool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pk_http_pool pk_http_pool; /* opaque */

/* Zero in any field means its documented default. Strings are copied at
 * create; the struct is not kept. */
typedef struct pk_http_options {
    size_t max_per_origin;   /* handles (connections) per origin; 8 */
    size_t max_total;        /* handles in all; 64 */
    int acquire_timeout_ms;  /* pk_http_exec's wait for a handle; 10000 */
    int connect_timeout_ms;  /* CURLOPT_CONNECTTIMEOUT_MS; 10000 */
    int transfer_timeout_ms; /* CURLOPT_TIMEOUT_MS per attempt; 30000 */
    int idle_timeout_ms;     /* idle handles retired; 30000 */
    int check_after_ms;      /* check before lending; 1000 */
    int max_lifetime_ms;     /* a handle is retired this old; 600000 */
    size_t max_response;     /* body bytes pk_http_exec keeps; 64 MiB */
    int retries;             /* extra attempts of an idempotent request
                                after a connection-level failure; 1
                                (PK_NEVER: none) */
    int max_redirects;       /* followed, same origin only; 0: none */
    int redirect_any_origin; /* nonzero: redirects may leave the origin
                                (the new origin's handles are then used
                                without its cap: libcurl follows them on
                                the same handle) */
    int http2;               /* nonzero: HTTP/2 over TLS when the server
                                offers it (still one connection per
                                handle); default HTTP/1.1 */
    const char *ca_file;     /* CA bundle; default libcurl's built-in one
                                (Debian: /etc/ssl/certs/ca-certificates.crt) */
    const char *ca_path;     /* a hashed CA directory instead, or too */
    int insecure;            /* nonzero: no TLS verification (tests only) */
    const char *user_agent;  /* default "poolkit/<version>" */
    const char *proxy;       /* CURLOPT_PROXY; default none (libcurl's
                                proxy environment variables apply) */
    int share_cookies;       /* nonzero: one cookie store for the pool,
                                kept between requests; default: each
                                request starts without cookies */
    pk_event_fn event;       /* the core's events (pool.h); optional */
    void *event_user;
} pk_http_options;

/* Makes a pool. Origins are made as they are first asked for.
 * Returns: 0, PK_EINVAL (NULL out, a bad size or time, a CA file that
 * cannot be read: err says which), PK_ENOMEM, PK_EADAPTER (libcurl or
 * OpenSSL failed to initialise; libcurl built with another TLS library
 * than OpenSSL gives this too when a CA file is set).
 * Owner: *out returned owned (pk_http_pool_destroy); o (may be NULL: all
 * defaults) and err borrowed. Threads: safe (curl_global_init runs once,
 * through pthread_once). */
PK_API int pk_http_pool_create(pk_http_pool **out, const pk_http_options *o,
                               pk_error *err);

/* A borrowed handle: `easy` (a CURL *) is the caller's until
 * pk_http_release, for requests to the origin it was borrowed for; the
 * fields ending in _ are the pool's. */
typedef struct pk_http_lease {
    void *easy;
    pk_lease lease_;
    void *origin_;
} pk_http_lease;

/* Lends a handle for url's origin, with the pool's defaults and
 * CURLOPT_URL set to url, waiting up to timeout_ms (0: an idle one, or a
 * new one when the origin is under its cap, PK_EAGAIN otherwise;
 * PK_WAIT_FOREVER: no limit) when the origin or the pool is at its cap. Set what the request needs and run
 * curl_easy_perform; keep to url's origin.
 * Returns: 0, PK_EINVAL (NULL, a URL libcurl cannot parse, a scheme other
 * than http and https: err says which), PK_EAGAIN, PK_ETIMEDOUT,
 * PK_ESHUTDOWN, PK_ENOMEM, PK_EFORKED.
 * Owner: lease, url and err borrowed. Threads: safe; the handle belongs
 * to the calling thread until released (libcurl: one thread at a time). */
PK_API int pk_http_acquire_at(pk_http_pool *pool, const char *url,
                              pk_http_lease *lease, int timeout_ms,
                              pk_error *err, const char *file, int line);
#define pk_http_acquire(pool, url, lease, timeout_ms, err)                  \
    pk_http_acquire_at((pool), (url), (lease), (timeout_ms), (err),         \
                       __FILE__, __LINE__)

/* Gives a handle back. last is the CURLcode of the caller's last
 * curl_easy_perform on it (0 for none): a connection-level failure
 * (connect, TLS, send, receive, timeout, nothing received) releases it
 * BROKEN, which closes it and makes the origin's older idle handles pass
 * a check before they are lent; anything else resets it and lends it
 * again. Returns: 0, PK_EINVAL (NULL, a lease not held), PK_EFORKED.
 * Owner: takes the lease (cleared). Threads: safe. */
PK_API int pk_http_release(pk_http_pool *pool, pk_http_lease *lease,
                           int last);

/* Called with each piece of a streamed response body. Returns 0 to go
 * on, nonzero to stop the transfer (pk_http_exec then returns
 * PK_ECANCELED). */
typedef int (*pk_http_data_fn)(void *user, const void *data, size_t len);

typedef struct pk_http_request {
    const char *url;            /* required: http:// or https:// */
    const char *method;         /* default "GET" ("POST" with a body) */
    const char *const *headers; /* "Name: value" strings, NULL-ended;
                                   may be NULL */
    const void *body;           /* sent as is; may be NULL */
    size_t body_len;
    int timeout_ms;             /* the whole call, waiting for a handle
                                   and every attempt (0: the pool's
                                   acquire plus transfer timeouts;
                                   PK_WAIT_FOREVER: the transfer timeout
                                   per attempt only) */
    int allow_replay;           /* nonzero: a non-idempotent request may
                                   go out on a reused connection (libcurl
                                   may then send it twice) */
    size_t max_response;        /* 0: the pool's */
    pk_http_data_fn on_data;    /* stream the body instead of keeping it */
    void *on_data_user;
} pk_http_request;

typedef struct pk_http_response {
    long status;        /* the HTTP status of the last response */
    char *body;         /* the body, NUL-terminated (NULL when streamed
                           or empty); owned, pk_http_response_free */
    size_t body_len;
    char *headers;      /* the raw header block of the last response,
                           NUL-terminated; owned */
    size_t headers_len;
    int attempts;       /* 1, or more after retries */
    int reused;         /* the last attempt went over a connection made
                           for an earlier request */
} pk_http_response;

/* Runs one request: borrows a handle for the URL's origin, sends the
 * request (retrying an idempotent one after a connection-level failure,
 * on another connection), keeps the response in out, and gives the handle
 * back, all by rq->timeout_ms. A response of any status is a success
 * (check out->status).
 * Returns: 0; PK_EINVAL (NULL pool, rq or out, no URL, a URL libcurl
 * cannot parse, a scheme other than http(s), body_len without body, a bad
 * timeout); PK_ETIMEDOUT (no handle in time, or the transfer passed its
 * timeout); PK_ECONNECT (the connection or TLS handshake failed:
 * libcurl's message in err->msg, the CURLcode in err->sys); PK_ETOOBIG
 * (the body passed max_response; the handle stays usable); PK_ECANCELED
 * (on_data said stop); PK_EADAPTER (any other libcurl failure: CURLcode
 * in err->sys); PK_ESHUTDOWN, PK_ENOMEM, PK_EFORKED. out is zeroed first
 * and holds what arrived even on failure (free it either way).
 * Owner: rq and err borrowed; out's buffers returned owned. Threads:
 * safe; the transfer runs on the calling thread. */
PK_API int pk_http_exec_at(pk_http_pool *pool, const pk_http_request *rq,
                           pk_http_response *out, pk_error *err,
                           const char *file, int line);
/* Variadic so that a compound literal request, commas and all, passes
 * through: pk_http_exec(pool, &(pk_http_request){ .url = u }, &r, &err). */
#define pk_http_exec(pool, ...)                                             \
    pk_http_exec_at((pool), __VA_ARGS__, __FILE__, __LINE__)

/* Frees a response's buffers and zeroes it. NULL is a no-op. */
PK_API void pk_http_response_free(pk_http_response *r);

/* Called as each request of a batch ends, on the batch's thread:
 * index into the batch, how many have ended so far of total, the
 * request's code (0: a response of any status arrived), its response
 * (also in the batch's responses[index]) and its error. It must not call
 * into the batch. */
typedef void (*pk_http_done_fn)(void *user, size_t index, size_t completed,
                                size_t total, int rc,
                                const pk_http_response *r,
                                const pk_error *err);

typedef struct pk_http_batch {
    const pk_http_request *requests; /* n of them */
    size_t n;
    pk_http_response *responses;     /* n, the caller's: filled (free
                                        each with pk_http_response_free) */
    int *codes;                      /* n, optional: each request's code */
    size_t max_parallel;             /* transfers at once; 0: 8 */
    int timeout_ms;                  /* the whole batch: a request not
                                        started by then ends PK_ETIMEDOUT
                                        (0 or PK_WAIT_FOREVER: none); each
                                        request's own timeout_ms counts
                                        from its start */
    pk_http_done_fn on_done;         /* optional: progress, per request */
    void *user;
} pk_http_batch;

/* Runs a batch of requests concurrently from the calling thread, up to
 * max_parallel transfers at once under the pool's caps (a request whose
 * origin is at its cap waits for a handle of its own batch or of another
 * thread to come back), reusing the pool's connections: each transfer
 * goes through its handle's own multi handle, the one pk_http_exec uses
 * too, so a connection opened by either serves both. Each request is
 * handled as pk_http_exec would (retries, redirects, limits). All on this
 * thread: one poll() over the transfers' sockets.
 * Returns: 0 when every request got a response; else the code of the
 * first one that failed (err holds its error; codes[] has each). PK_EINVAL
 * (NULL pool, b, requests or responses with n > 0, or a bad request: err
 * names its index; nothing was sent).
 * Owner: b and what it points to borrowed; the responses' buffers
 * returned owned. Threads: safe; callbacks run on this thread. */
PK_API int pk_http_batch_run_at(pk_http_pool *pool, const pk_http_batch *b,
                                pk_error *err, const char *file, int line);
#define pk_http_batch_run(pool, ...)                                        \
    pk_http_batch_run_at((pool), __VA_ARGS__, __FILE__, __LINE__)

/* Keeps min_idle connections to url's origin open and idle, ready for
 * the next borrowers (a cold start's connects and TLS handshakes paid
 * ahead). Each new handle of the origin first runs a warming request on
 * its connection: `method` (NULL: "HEAD") to url, whose response (any
 * status) is discarded; a warming request that fails counts as a failed
 * create, retried with the core's backoff. The maintenance thread tops
 * the origin up within about a second of a handle going out or going
 * stale. min_idle 0 stops warming. (Not CURLOPT_CONNECT_ONLY: libcurl
 * 7.88 never lends a connect-only connection to a later transfer.)
 * Returns: 0, PK_EINVAL (NULL, a bad URL, min_idle above the origin's
 * cap), PK_ENOMEM, PK_ESHUTDOWN. Owner: url and method copied.
 * Threads: safe. */
PK_API int pk_http_prewarm(pk_http_pool *pool, const char *url,
                           const char *method, size_t min_idle,
                           pk_error *err);

/* The counters below count the adapter's own transfers (pk_http_exec,
 * pk_http_batch_run): what a caller runs with curl_easy_perform on a
 * pk_http_acquire lease shows only in the core's figures. */
typedef struct pk_http_stats {
    pk_pool_stats core;        /* summed over the origins (waits: the
                                  largest of their percentiles) */
    uint64_t requests;         /* attempts sent */
    uint64_t connections_new;  /* attempts that opened a connection */
    uint64_t connections_reused;
    uint64_t tls_handshakes;   /* new TLS connections */
    uint64_t tls_resumed;      /* ... of them with a resumed session */
    uint64_t stale_caught;     /* idle connections retired by the check */
    uint64_t retries;
    uint64_t fresh_for_replay; /* non-idempotent requests sent on a
                                  fresh connection */
    uint64_t transfer_p50_us;  /* time of an attempt */
    uint64_t transfer_p99_us;
    uint64_t ca_loads;         /* CA bundle parses: 1 a pool */
    size_t origins;
} pk_http_stats;

/* Fills *out for one origin ("https://example.com:443", or any URL of
 * it) or, with origin NULL, for the whole pool. Counters are exact each,
 * not one instant together.
 * Returns: 0, PK_EINVAL, PK_ENOENT (no such origin yet). Threads: safe. */
PK_API int pk_http_stats_get(pk_http_pool *pool, const char *origin,
                             pk_http_stats *out);

/* Stops lending and waits up to timeout_ms for lent handles (see
 * pk_pool_close). Returns: 0, PK_ETIMEDOUT, PK_EINVAL, PK_EFORKED.
 * Threads: safe. */
PK_API int pk_http_pool_close(pk_http_pool *pool, int timeout_ms);

/* Closes every handle and frees the pool; a lease still out keeps the
 * pool's memory until it is released. In a child after fork(), only
 * forget_in_child runs. NULL is a no-op. Owner: takes pool. Threads:
 * exclusive. */
PK_API void pk_http_pool_destroy(pk_http_pool *pool);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_HTTP_H */
