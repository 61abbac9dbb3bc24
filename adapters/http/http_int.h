/* adapters/http/http_int.h - what the HTTP adapter's files share.
 *
 * Four files, each calling only the ones above it in this list:
 *   handle.c   one easy handle: the record the core pools (the CURL *,
 *              its socket, the server's keep-alive), the pool-wide
 *              defaults applied to it, the response capture callbacks,
 *              the liveness check, what a CURLcode means;
 *   pool.c     the pool: options, the shared DNS/TLS-session cache and CA
 *              store, origins (member pools of one group), the core's
 *              hooks, acquire, release, maintenance, stats;
 *   request.c  a request by one deadline, retries, redirects: the job
 *              pk_http_exec runs on this thread;
 *   batch.c    pk_http_batch: many jobs at once from one thread, one poll
 *              over their sockets.
 * Deadlines are the core's (pool.h, "deadlines": pk_clock_ns,
 * pk_deadline_after, pk_deadline_ms_left, PK_NO_DEADLINE).
 * Nothing here is API: libpoolkit-http exports only http.h. */
#ifndef POOLKIT_HTTP_INT_H
#define POOLKIT_HTTP_INT_H

#include <poolkit/hist.h>
#include <poolkit/http.h>

#include <curl/curl.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* ---- handle.c ----------------------------------------------------------- */

/* What every handle of a pool gets after create and after each reset;
 * filled once by pool.c, read-only after. */
struct pk__http_conf {
    CURLSH *share;
    _Atomic(void *) store;  /* X509_STORE *, installed by the SSL_CTX
                               callback; NULL: libcurl loads CAs itself.
                               Set once, at the first TLS origin, while
                               other origins' handles may read it */
    const char *ca_file;    /* with store NULL only */
    const char *ca_path;
    const char *user_agent;
    const char *proxy;
    long connect_timeout_ms;
    long transfer_timeout_ms;
    int insecure;
    int http2;
    int share_cookies;
};

/* The body and headers of the response being received, or the stream it
 * goes to. Set on a handle for one request (request.c). */
struct pk__http_capture {
    char *body;
    size_t body_len, body_cap, max_body;
    char *headers;
    size_t headers_len, headers_cap;
    pk_http_data_fn on_data;
    void *on_data_user;
    size_t streamed; /* bytes handed to on_data */
    int too_big;  /* the body passed max_body */
    int stopped;  /* on_data said stop */
    int no_memory;
};

struct pk__http_origin;

/* The core's resource. Only the thread holding its lease (or the core's
 * hook, which holds it too) touches it. */
struct pk__http_handle {
    CURL *easy;
    CURLM *multi;          /* its own, cache of one connection: the
                              adapter runs every transfer through it, so
                              pk_http_exec and the batch reuse the same
                              connections (curl_easy_perform would keep
                              them in a cache of its own) */
    struct pk__http_origin *origin;
    int sock;              /* the kept connection's socket, or -1 (read
                              after each transfer; libcurl closes sockets
                              through the handle's callback, which
                              clears it) */
    uint64_t idle_since;   /* CLOCK_MONOTONIC ns, at release */
    int keepalive_ms;      /* the server's Keep-Alive timeout, 0: unsaid */
    int raw;               /* lent by pk_http_acquire: the caller may
                              have set anything, so its release resets
                              all; the adapter's own leases undo only
                              what they set */
    int tls_resumed;       /* the current transfer's TLS session was
                              resumed (read at its first response line,
                              while libcurl still shows the SSL *) */
    struct pk__http_capture *cap; /* the current request's, or NULL */
    char errbuf[CURL_ERROR_SIZE];
};

/* A new handle with conf applied, or NULL (out of memory). */
struct pk__http_handle *pk__http_handle_new(const struct pk__http_conf *conf,
                                            struct pk__http_origin *o);
void pk__http_handle_free(struct pk__http_handle *h);
/* Runs the transfer set on h through its multi handle, on this thread,
 * to the end (libcurl's own timeouts bound it). Returns its CURLcode. */
CURLcode pk__http_handle_run(struct pk__http_handle *h);
/* After a transfer h->easy ran in h->multi: its result, and the easy
 * handle taken out of the multi handle (the connection stays cached). */
CURLcode pk__http_handle_done(struct pk__http_handle *h);
/* Runs `method` to url on h and discards the response (pre-warming).
 * Returns 0, or -1 with err filled. */
int pk__http_handle_warm(struct pk__http_handle *h, const char *url,
                         const char *method, pk_error *err);
/* After a transfer of a raw lease: curl_easy_reset, conf again, cookies
 * cleared unless shared; else only what the adapter's requests set goes
 * back to conf. Returns 0, or -1 when a default would not set (the
 * handle should be closed). */
int pk__http_handle_reset(struct pk__http_handle *h,
                          const struct pk__http_conf *conf);
/* 1 if the handle's connection is past the server's keep-alive or its
 * socket shows EOF or data (the server closed it); 0 if it looks alive or
 * there is none yet. */
int pk__http_handle_stale(const struct pk__http_handle *h);
/* A CURLcode that says the connection cannot be trusted again. */
int pk__http_code_broken(CURLcode rc);
/* A CURLcode of a connect that failed: no connection was used. */
int pk__http_code_no_connection(CURLcode rc);
/* ... and that an idempotent request may be sent again for it. */
int pk__http_code_retryable(CURLcode rc);
/* The poolkit code for a failed transfer (PK_ECONNECT, PK_ETIMEDOUT, ...)
 * with libcurl's message and the CURLcode filled into err. */
int pk__http_set_error(pk_error *err, CURLcode rc,
                       const struct pk__http_handle *h, const char *url);

/* ---- pool.c ----------------------------------------------------------------- */

struct pk__http_counts {
    _Atomic uint64_t requests, connections_new, connections_reused;
    _Atomic uint64_t tls_handshakes, tls_resumed, stale_caught, retries;
    _Atomic uint64_t fresh_for_replay;
};

struct pk__http_origin {
    struct pk__http_origin *next; /* set before it is published; fixed */
    struct pk_http_pool *pool;
    char *key;                    /* "https://host:443" */
    char *prefix;                 /* the first URL's "scheme://authority"
                                     as written: a URL that starts so
                                     finds its origin without a parse */
    size_t prefix_len;
    int tls;
    pk_pool *core;
    struct pk__http_counts n;
    pk_hist *transfer_us;
    pthread_mutex_t warm_mu;      /* warm_url, warm_method */
    char *warm_url;               /* pk_http_prewarm's, or NULL */
    char *warm_method;
};

struct pk_http_pool {
    unsigned magic;
    _Atomic int refs;       /* the owner's and each origin's */
    pid_t pid;              /* of the creator: a child does not join */
    pthread_mutex_t mu;     /* origins, closing */
    pthread_cond_t cv;      /* maintenance thread's sleep (CLOCK_MONOTONIC) */
    /* Pushed at the head under mu, read without it: an origin is never
     * unlinked before the pool is destroyed. */
    _Atomic(struct pk__http_origin *) origins;
    size_t norigins;        /* mu */
    _Atomic int closing;    /* set under mu: no new origins, maintenance
                               stops; read without it on the fast path */
    pthread_t maint;
    int maint_running;
    pk_pool_group *group;
    struct pk__http_conf conf;
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    char *ca_file, *ca_path, *user_agent, *proxy; /* conf's strings */
    pk_pool_options member;  /* template of each origin's pool */
    int acquire_timeout_ms;
    int retries;
    int max_redirects;
    int redirect_any_origin;
    size_t max_response;
    _Atomic uint64_t ca_loads;
    pk_hist *transfer_us;    /* all origins */
};

int pk__http_valid(const pk_http_pool *pool);
/* Counts a finished attempt on h: new or reused connection, TLS, time. */
void pk__http_count_attempt(struct pk__http_handle *h, CURLcode code,
                            uint64_t took_ns);
/* The origin key of url ("https://host:443"), owned; NULL with err set
 * (PK_EINVAL: cannot parse, not http(s); PK_ENOMEM). */
char *pk__http_origin_key(const char *url, int *tls, pk_error *err);
/* pk_http_acquire_at, with raw 0 for the adapter's own requests. */
int pk__http_acquire(pk_http_pool *pool, const char *url,
                     pk_http_lease *lease, int timeout_ms, int raw,
                     pk_error *err, const char *file, int line);

/* ---- request.c ------------------------------------------------------------------- */

/* One request through its attempts and redirects. */
struct pk__http_job {
    const pk_http_request *rq;  /* the caller's */
    pk_http_response *out;      /* the caller's */
    const char *method;         /* "GET" after a 303 */
    const void *body;
    size_t body_len;
    char *url;                  /* owned: this hop's */
    struct curl_slist *headers; /* owned */
    int retries_used, retries_counted, redirects;
    int rc;                     /* when done */
    pk_error err;
    /* The attempt in flight: */
    pk_http_lease lease;
    struct pk__http_capture cap;
    uint64_t t0;
};

/* 0, or PK_EINVAL with err filled (who names the call). */
int pk__http_bad_request(pk_http_pool *pool, const pk_http_request *rq,
                         pk_error *err, const char *who);
/* A request's whole timeout: its own, or the pool's acquire + transfer. */
int pk__http_timeout_of(const pk_http_pool *pool, int timeout_ms);
/* Zeroes out. Returns 0 or PK_ENOMEM. */
int pk__http_job_init(struct pk__http_job *j, const pk_http_request *rq,
                      pk_http_response *out);
void pk__http_job_free(struct pk__http_job *j);
/* Borrows a handle for the job's URL (waiting up to acquire_ms) and sets
 * the request on it. Returns 0 (ready to run), or a code with j->err. */
int pk__http_job_start(pk_http_pool *pool, struct pk__http_job *j,
                       int acquire_ms, uint64_t deadline, const char *file,
                       int line);
/* After the transfer ended with code: counts it, fills out, gives the
 * handle back. Returns 1 when the job is done (j->rc, j->err), 0 when it
 * goes again (a retry or a redirect: start it again). */
int pk__http_job_finish(pk_http_pool *pool, struct pk__http_job *j,
                        CURLcode code, uint64_t deadline);

#endif /* POOLKIT_HTTP_INT_H */
