/* adapters/http/http_int.h - what the HTTP adapter's files share.
 *
 * Three files, each calling only the ones above it in this list:
 *   handle.c   one easy handle: the record the core pools (the CURL *,
 *              its socket, the server's keep-alive), the pool-wide
 *              defaults applied to it, the response capture callbacks,
 *              the liveness check, what a CURLcode means;
 *   pool.c     the pool: options, the shared DNS/TLS-session cache and CA
 *              store, origins (member pools of one group), the core's
 *              hooks, acquire, release, maintenance, stats;
 *   request.c  pk_http_exec: a request by one deadline, retries,
 *              redirects.
 * Nothing here is API: libpoolkit-http exports only http.h. */
#ifndef POOLKIT_HTTP_INT_H
#define POOLKIT_HTTP_INT_H

#include <poolkit/hist.h>
#include <poolkit/http.h>

#include <curl/curl.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define PK__HTTP_NO_DEADLINE UINT64_MAX

/* ---- handle.c ----------------------------------------------------------- */

/* What every handle of a pool gets after create and after each reset;
 * filled once by pool.c, read-only after. */
struct pk__http_conf {
    CURLSH *share;
    void *store;            /* X509_STORE *, installed by the SSL_CTX
                               callback; NULL: libcurl loads CAs itself */
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
    int too_big;  /* the body passed max_body */
    int stopped;  /* on_data said stop */
    int no_memory;
};

struct pk__http_origin;

/* The core's resource. Only the thread holding its lease (or the core's
 * hook, which holds it too) touches it. */
struct pk__http_handle {
    CURL *easy;
    struct pk__http_origin *origin;
    int sock;              /* the kept connection's socket, or -1 (read
                              at release, for forget_in_child and check) */
    uint64_t idle_since;   /* CLOCK_MONOTONIC ns, at release */
    int keepalive_ms;      /* the server's Keep-Alive timeout, 0: unsaid */
    int tls_resumed;       /* the current transfer's TLS session was
                              resumed (read at its first response line,
                              while libcurl still shows the SSL *) */
    struct pk__http_capture *cap; /* the current request's, or NULL */
    char errbuf[CURL_ERROR_SIZE];
};

uint64_t pk__http_now_ns(void);
/* A new handle with conf applied, or NULL (out of memory). */
struct pk__http_handle *pk__http_handle_new(const struct pk__http_conf *conf,
                                            struct pk__http_origin *o);
void pk__http_handle_free(struct pk__http_handle *h);
/* curl_easy_reset, conf again, cookies cleared unless shared. Reads the
 * connection's socket first. Returns 0, or -1 when a default would not
 * set (the handle should be closed). */
int pk__http_handle_reset(struct pk__http_handle *h,
                          const struct pk__http_conf *conf);
/* 1 if the handle's connection is past the server's keep-alive or its
 * socket shows EOF or data (the server closed it); 0 if it looks alive or
 * there is none yet. */
int pk__http_handle_stale(const struct pk__http_handle *h);
/* A CURLcode that says the connection cannot be trusted again. */
int pk__http_code_broken(CURLcode rc);
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
    struct pk__http_origin *next; /* pool->origins, under pool->mu */
    struct pk_http_pool *pool;
    char *key;                    /* "https://host:443" */
    int tls;
    pk_pool *core;
    struct pk__http_counts n;
    pk_hist *transfer_us;
};

struct pk_http_pool {
    unsigned magic;
    _Atomic int refs;       /* the owner's and each origin's */
    pid_t pid;              /* of the creator: a child does not join */
    pthread_mutex_t mu;     /* origins, closing */
    pthread_cond_t cv;      /* maintenance thread's sleep (CLOCK_MONOTONIC) */
    struct pk__http_origin *origins;
    size_t norigins;
    int closing;            /* mu: no new origins, maintenance stops */
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
void pk__http_count_attempt(struct pk__http_handle *h, uint64_t took_ns);
/* The origin key of url ("https://host:443"), owned; NULL with err set
 * (PK_EINVAL: cannot parse, not http(s); PK_ENOMEM). */
char *pk__http_origin_key(const char *url, int *tls, pk_error *err);

#endif /* POOLKIT_HTTP_INT_H */
