/* adapters/http/pool.c - the HTTP pool: easy handles as pk_pool
 * resources, one member pool per origin in one group (include/poolkit/
 * http.h says what each hook does).
 *
 * Lifetime. The pool is shared by its owner and its origins (refs): an
 * origin's core pool calls user_free after its last handle is gone, which
 * may be after pk_http_pool_destroy when a lease comes back late, and
 * the last reference frees the group, the share and the CA store.
 *
 * Maintenance. Origin pools run with PK_POOL_MANUAL_MAINTENANCE; one
 * thread of the pool's, "pk-http-maint", calls pk_pool_maintain on each
 * (idle timeout, lifetime) every MAINTAIN_MS, instead of a thread per
 * origin.
 *
 * Locks: mu (origins list, closing, the maintenance thread's sleep, the
 * CA store's first load) is held across no core call but
 * pk_pool_stats_get, and no hook takes it; share_mu[] are libcurl's share
 * locks, leaves. */
#include "http_int.h"

#include <poolkit/version.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HTTP_MAGIC 0x706b4854u /* "pkHT" */
#define MAINTAIN_MS 1000

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

/* libcurl's global state: set up once per process (and never torn down:
 * another library in the process may use libcurl too). */
static void
global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_ALL);
}

int
pk__http_valid(const pk_http_pool *pool)
{
    return pool && pool->magic == HTTP_MAGIC;
}

#define COUNT(n, field) \
    atomic_fetch_add_explicit(&(n)->field, 1, memory_order_relaxed)

/* ---- lifetime ------------------------------------------------------------------- */

static void
pool_free(struct pk_http_pool *p)
{
    pk_pool_group_destroy(p->group);
    if (p->conf.share)
        curl_share_cleanup(p->conf.share);
    X509_STORE_free(atomic_load(&p->conf.store));
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&p->share_mu[i]);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    pk_hist_destroy(p->transfer_us);
    free(p->ca_file);
    free(p->ca_path);
    free(p->user_agent);
    free(p->proxy);
    p->magic = 0;
    free(p);
}

static void
pool_unref(struct pk_http_pool *p)
{
    if (atomic_fetch_sub(&p->refs, 1) == 1)
        pool_free(p);
}

/* ---- the share's locks ------------------------------------------------------------ */

static void
share_lock(CURL *e, curl_lock_data d, curl_lock_access a, void *arg)
{
    struct pk_http_pool *p = arg;
    (void)e;
    (void)a;
    pthread_mutex_lock(&p->share_mu[d]);
}

static void
share_unlock(CURL *e, curl_lock_data d, void *arg)
{
    struct pk_http_pool *p = arg;
    (void)e;
    pthread_mutex_unlock(&p->share_mu[d]);
}

static int
make_share(struct pk_http_pool *p, int cookies)
{
    CURLSH *sh = curl_share_init();
    if (!sh)
        return -1;
    p->conf.share = sh;
    if (curl_share_setopt(sh, CURLSHOPT_LOCKFUNC, share_lock) ||
        curl_share_setopt(sh, CURLSHOPT_UNLOCKFUNC, share_unlock) ||
        curl_share_setopt(sh, CURLSHOPT_USERDATA, p) ||
        curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) ||
        curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) ||
        (cookies &&
         curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE)))
        return -1;
    return 0;
}

/* ---- the CA store ------------------------------------------------------------------ */

/* libcurl's TLS library is OpenSSL (then an SSL_CTX callback can install
 * our store). */
static int
curl_uses_openssl(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    return v && v->ssl_version && strncmp(v->ssl_version, "OpenSSL", 7) == 0;
}

/* Parses the CA bundle (or directory) once. Returns 0 or fills err. */
static int
load_store(struct pk_http_pool *p, pk_error *err)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    const char *file = p->ca_file ? p->ca_file
                       : p->ca_path ? NULL
                                    : (v ? v->cainfo : NULL);
    const char *dir = p->ca_path ? p->ca_path
                      : p->ca_file ? NULL
                                   : (v ? v->capath : NULL);
    X509_STORE *s = X509_STORE_new();
    if (!s)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "X509_STORE_new");
    if ((file && X509_STORE_load_file(s, file) != 1) ||
        (dir && X509_STORE_load_path(s, dir) != 1)) {
        unsigned long e = ERR_get_error();
        char why[200];
        ERR_error_string_n(e, why, sizeof why);
        X509_STORE_free(s);
        return pk_error_set(err, PK_EINVAL, 0, "CA %s %s: %s",
                            file ? "file" : "directory", file ? file : dir,
                            why);
    }
    if (!file && !dir)
        X509_STORE_set_default_paths(s);
    atomic_store_explicit(&p->conf.store, s, memory_order_release);
    atomic_fetch_add(&p->ca_loads, 1);
    return 0;
}

/* ---- hooks -------------------------------------------------------------------------- */

/* A pre-warmed origin's new handle runs the warming request first, so
 * it enters the pool with its connection open. */
static int
warm(struct pk__http_origin *o, struct pk__http_handle *h, pk_error *err)
{
    pthread_mutex_lock(&o->warm_mu);
    char *url = o->warm_url ? strdup(o->warm_url) : NULL;
    char *method = o->warm_method ? strdup(o->warm_method) : NULL;
    int wanted = o->warm_url != NULL;
    pthread_mutex_unlock(&o->warm_mu);
    int rc = 0;
    if (wanted && (!url || !method))
        rc = pk_error_set(err, PK_ENOMEM, ENOMEM, "out of memory");
    else if (wanted && pk__http_handle_warm(h, url, method, err) != 0)
        rc = err ? err->code : PK_ECONNECT;
    free(url);
    free(method);
    return rc;
}

static int
h_create(void *user, void **res, pk_error *err)
{
    struct pk__http_origin *o = user;
    struct pk__http_handle *h = pk__http_handle_new(&o->pool->conf, o);
    if (!h)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "curl_easy_init failed");
    int rc = warm(o, h, err);
    if (rc) {
        pk__http_handle_free(h);
        return rc;
    }
    *res = h;
    return 0;
}

static void
h_destroy(void *user, void *res)
{
    (void)user;
    pk__http_handle_free(res);
}

static int
h_check(void *user, void *res, pk_error *err)
{
    struct pk__http_origin *o = user;
    if (!pk__http_handle_stale(res))
        return 0;
    COUNT(&o->n, stale_caught);
    return pk_error_set(err, PK_ECHECK, 0, "%s: the idle connection was "
                        "closed by the server or is past its keep-alive",
                        o->key);
}

static int
h_reset(void *user, void *res)
{
    struct pk__http_origin *o = user;
    return pk__http_handle_reset(res, &o->pool->conf);
}

/* Async-signal-safe: close only. The handle is leaked in the child. */
static void
h_forget_in_child(void *user, void *res)
{
    struct pk__http_handle *h = res;
    (void)user;
    if (h->sock >= 0)
        close(h->sock);
}

static void
origin_free(void *user)
{
    struct pk__http_origin *o = user;
    struct pk_http_pool *p = o->pool;
    pk_hist_destroy(o->transfer_us);
    pthread_mutex_destroy(&o->warm_mu);
    free(o->warm_url);
    free(o->warm_method);
    free(o->prefix);
    free(o->key);
    free(o);
    pool_unref(p);
}

/* ---- origins ------------------------------------------------------------------------- */

char *
pk__http_origin_key(const char *url, int *tls, pk_error *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *key = NULL;

    if (!u) {
        pk_error_set(err, PK_ENOMEM, ENOMEM, "curl_url failed");
        return NULL;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    if (uc != CURLUE_OK) {
        pk_error_set(err, PK_EINVAL, (int)uc, "bad URL \"%.120s\": %s", url,
                     curl_url_strerror(uc));
    } else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        pk_error_set(err, PK_EINVAL, 0, "unsupported scheme \"%s\" in "
                     "\"%.120s\" (http and https only)", scheme, url);
    } else {
        size_t n = strlen(scheme) + strlen(host) + strlen(port) + 5;
        key = malloc(n);
        if (key) {
            snprintf(key, n, "%s://%s:%s", scheme, host, port);
            *tls = scheme[4] == 's';
        } else {
            pk_error_set(err, PK_ENOMEM, ENOMEM, "out of memory");
        }
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return key;
}

static struct pk__http_origin *
find_locked(struct pk_http_pool *p, const char *key)
{
    for (struct pk__http_origin *o = atomic_load(&p->origins); o; o = o->next)
        if (strcmp(o->key, key) == 0)
            return o;
    return NULL;
}

/* "scheme://authority" of url as written: its length, or 0. */
static size_t
prefix_len(const char *url)
{
    const char *s = strstr(url, "://");
    if (!s)
        return 0;
    return (size_t)(s + 3 - url) + strcspn(s + 3, "/?#");
}

/* The origin whose first URL began as url does: no parse, no lock. */
static struct pk__http_origin *
find_by_prefix(struct pk_http_pool *p, const char *url)
{
    size_t n = prefix_len(url);
    for (struct pk__http_origin *o = atomic_load(&p->origins); n && o;
         o = o->next)
        if (o->prefix_len == n && memcmp(o->prefix, url, n) == 0)
            return o;
    return NULL;
}

static struct pk__http_origin *
origin_new(struct pk_http_pool *p, char *key, int tls, const char *url)
{
    struct pk__http_origin *o = calloc(1, sizeof *o);
    if (o) {
        o->prefix_len = prefix_len(url);
        o->prefix = strndup(url, o->prefix_len);
    }
    if (!o || !o->prefix || pk_hist_create(&o->transfer_us) != 0) {
        if (o)
            free(o->prefix);
        free(o);
        return NULL;
    }
    if (pthread_mutex_init(&o->warm_mu, NULL) != 0) {
        pk_hist_destroy(o->transfer_us);
        free(o->prefix);
        free(o);
        return NULL;
    }
    o->pool = p;
    o->key = key;
    o->tls = tls;
    pk_pool_options po = p->member;
    po.user = o;
    if (pk_pool_create(&o->core, &po) != 0) {
        pthread_mutex_destroy(&o->warm_mu);
        pk_hist_destroy(o->transfer_us);
        free(o->prefix);
        free(o);
        return NULL;
    }
    atomic_fetch_add(&p->refs, 1); /* dropped by origin_free */
    return o;
}

/* The origin of key, made on first use (url: the URL that asks). Takes
 * *key either way. */
static struct pk__http_origin *
origin_get(struct pk_http_pool *p, char *key, int tls, const char *url,
           pk_error *err)
{
    pthread_mutex_lock(&p->mu);
    struct pk__http_origin *o = p->closing ? NULL : find_locked(p, key);
    int closing = p->closing;
    pthread_mutex_unlock(&p->mu);
    if (o || closing) {
        free(key);
        if (closing)
            pk_error_set(err, PK_ESHUTDOWN, 0, "the HTTP pool is closed");
        return o;
    }
    /* The CA store before the first TLS origin: parsed once, here, not
     * when the pool is made (a pool that only speaks http never pays). */
    if (tls && curl_uses_openssl()) {
        pthread_mutex_lock(&p->mu);
        int rc = atomic_load(&p->conf.store) ? 0 : load_store(p, err);
        pthread_mutex_unlock(&p->mu);
        if (rc) {
            free(key);
            return NULL;
        }
    }
    struct pk__http_origin *made = origin_new(p, key, tls, url);
    if (!made) {
        free(key);
        pk_error_set(err, PK_ENOMEM, ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    o = p->closing ? NULL : find_locked(p, made->key);
    if (!o && !p->closing) {
        made->next = atomic_load(&p->origins);
        atomic_store(&p->origins, made); /* published whole */
        p->norigins++;
        o = made;
        made = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (made) /* another thread made it first, or the pool closed */
        pk_pool_destroy(made->core);
    if (!o)
        pk_error_set(err, PK_ESHUTDOWN, 0, "the HTTP pool is closed");
    return o;
}

/* ---- maintenance --------------------------------------------------------------------- */

static void *
maint_main(void *arg)
{
    struct pk_http_pool *p = arg;

    pthread_mutex_lock(&p->mu);
    while (!p->closing) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += MAINTAIN_MS / 1000;
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        /* Origins are only added, and freed after this thread is joined:
         * the walk may leave the lock between them. */
        for (struct pk__http_origin *o = atomic_load(&p->origins);
             o && !p->closing;
             o = o->next) {
            pthread_mutex_unlock(&p->mu);
            pk_pool_maintain(o->core);
            pthread_mutex_lock(&p->mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- create ------------------------------------------------------------------------- */

static int
positive_or_default(int v, int dflt)
{
    return v == 0 ? dflt : v;
}

static int
check_options(const pk_http_options *o, pk_error *err)
{
    const struct { const char *name; int v; int never_ok; } times[] = {
        { "acquire_timeout_ms", o->acquire_timeout_ms, 0 },
        { "connect_timeout_ms", o->connect_timeout_ms, 0 },
        { "transfer_timeout_ms", o->transfer_timeout_ms, 0 },
        { "idle_timeout_ms", o->idle_timeout_ms, 1 },
        { "check_after_ms", o->check_after_ms, 1 },
        { "max_lifetime_ms", o->max_lifetime_ms, 1 },
        { "retries", o->retries, 1 },
        { "max_redirects", o->max_redirects, 0 },
    };
    for (size_t i = 0; i < sizeof times / sizeof *times; i++)
        if (times[i].v < 0 && !(times[i].never_ok && times[i].v == PK_NEVER))
            return pk_error_set(err, PK_EINVAL, 0, "pk_http_options: %s "
                                "(%d) must be 0 or positive%s", times[i].name,
                                times[i].v,
                                times[i].never_ok ? " or PK_NEVER" : "");
    if (o->max_per_origin > PK_POOL_SIZE_MAX ||
        o->max_total > PK_POOL_SIZE_MAX)
        return pk_error_set(err, PK_EINVAL, 0, "pk_http_options: a size is "
                            "above PK_POOL_SIZE_MAX");
    if ((o->ca_file && access(o->ca_file, R_OK) != 0) ||
        (o->ca_path && access(o->ca_path, R_OK) != 0))
        return pk_error_set(err, PK_EINVAL, errno, "pk_http_options: %s "
                            "%s cannot be read: %s",
                            o->ca_file ? "ca_file" : "ca_path",
                            o->ca_file ? o->ca_file : o->ca_path,
                            strerror(errno));
    return 0;
}

static int
copy_text(char **dst, const char *src)
{
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

static void
member_options(struct pk_http_pool *p, const pk_http_options *o)
{
    pk_pool_options *m = &p->member;
    memset(m, 0, sizeof *m);
    m->create = h_create;
    m->destroy = h_destroy;
    m->check = h_check;
    m->reset = h_reset;
    m->forget_in_child = h_forget_in_child;
    m->user_free = origin_free;
    m->event = o->event;
    m->event_user = o->event_user;
    m->max_size = o->max_per_origin ? o->max_per_origin : 8;
    m->max_creating = m->max_size; /* a create makes no connection */
    m->idle_timeout_ms = positive_or_default(o->idle_timeout_ms, 30000);
    m->check_after_ms = positive_or_default(o->check_after_ms, 1000);
    m->max_lifetime_ms = positive_or_default(o->max_lifetime_ms, 600000);
    m->flags = PK_POOL_MANUAL_MAINTENANCE;
    m->group = p->group;
}

static int
init_locks(struct pk_http_pool *p)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        return -1;
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        return -1;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        if (pthread_mutex_init(&p->share_mu[i], NULL) != 0)
            return -1;
    return 0;
}

static struct pk_http_pool *
pool_new(const pk_http_options *o)
{
    struct pk_http_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    atomic_init(&p->refs, 1);
    p->pid = getpid();
    if (init_locks(p) != 0 || pk_hist_create(&p->transfer_us) != 0 ||
        copy_text(&p->ca_file, o->ca_file) ||
        copy_text(&p->ca_path, o->ca_path) ||
        copy_text(&p->user_agent, o->user_agent ? o->user_agent
                                                : "poolkit/" PK_VERSION_STRING) ||
        copy_text(&p->proxy, o->proxy) ||
        pk_pool_group_create(&p->group,
                             o->max_total ? o->max_total : 64) != 0 ||
        make_share(p, o->share_cookies) != 0) {
        pool_free(p);
        return NULL;
    }
    struct pk__http_conf *c = &p->conf;
    c->ca_file = p->ca_file;
    c->ca_path = p->ca_path;
    c->user_agent = p->user_agent;
    c->proxy = p->proxy;
    c->connect_timeout_ms = positive_or_default(o->connect_timeout_ms, 10000);
    c->transfer_timeout_ms =
        positive_or_default(o->transfer_timeout_ms, 30000);
    c->insecure = o->insecure != 0;
    c->http2 = o->http2 != 0;
    c->share_cookies = o->share_cookies != 0;
    p->acquire_timeout_ms = positive_or_default(o->acquire_timeout_ms, 10000);
    p->retries = o->retries == PK_NEVER ? 0 : positive_or_default(o->retries, 1);
    p->max_redirects = o->max_redirects;
    p->redirect_any_origin = o->redirect_any_origin != 0;
    p->max_response = o->max_response ? o->max_response : (size_t)64 << 20;
    member_options(p, o);
    return p;
}

int
pk_http_pool_create(pk_http_pool **out, const pk_http_options *o,
                    pk_error *err)
{
    static const pk_http_options defaults;
    if (!out)
        return pk_error_set(err, PK_EINVAL, 0, "pk_http_pool_create: out "
                            "is NULL");
    if (!o)
        o = &defaults;
    int rc = check_options(o, err);
    if (rc)
        return rc;
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return pk_error_set(err, PK_EADAPTER, (int)global_rc,
                            "curl_global_init: %s",
                            curl_easy_strerror(global_rc));
    struct pk_http_pool *p = pool_new(o);
    if (!p)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "pk_http_pool_create: "
                            "out of memory");
    p->magic = HTTP_MAGIC;
    if (pthread_create(&p->maint, NULL, maint_main, p) != 0) {
        pool_free(p);
        return pk_error_set(err, PK_ECREATE, 0, "pk_http_pool_create: the "
                            "maintenance thread could not start");
    }
    p->maint_running = 1;
    *out = p;
    return 0;
}

/* ---- acquire and release ---------------------------------------------------------- */

/* The origin of url: by its prefix when one was seen, else parsed. */
static struct pk__http_origin *
origin_of(struct pk_http_pool *p, const char *url, pk_error *err)
{
    struct pk__http_origin *o = find_by_prefix(p, url);
    if (o) {
        if (p->closing) /* a plain read: closing only ever goes to 1 */
            pk_error_set(err, PK_ESHUTDOWN, 0, "the HTTP pool is closed");
        return p->closing ? NULL : o;
    }
    int tls = 0;
    char *key = pk__http_origin_key(url, &tls, err);
    return key ? origin_get(p, key, tls, url, err) : NULL;
}

int
pk__http_acquire(pk_http_pool *pool, const char *url, pk_http_lease *lease,
                 int timeout_ms, int raw, pk_error *err, const char *file,
                 int line)
{
    if (!pk__http_valid(pool) || !url || !lease || !file ||
        (timeout_ms < 0 && timeout_ms != PK_WAIT_FOREVER))
        return pk_error_set(err, PK_EINVAL, 0, "pk_http_acquire: %s",
                            !pk__http_valid(pool) ? "not a pk_http_pool"
                            : !url || !lease || !file ? "NULL argument"
                                                      : "bad timeout");
    memset(lease, 0, sizeof *lease);
    pk_error e;
    struct pk__http_origin *o = origin_of(pool, url, &e);
    if (!o) {
        if (err)
            *err = e;
        return e.code;
    }
    /* A 0 ms acquire still makes a handle when the origin has room (a
     * create is only curl_easy_init; at the total cap it may retire
     * another origin's idle handle): it waits for no release, so a cold
     * batch starts all its transfers at once. */
    int rc = timeout_ms == 0
                 ? pk_pool_acquire_or_create_at(o->core, &lease->lease_, err,
                                                file, line)
                 : pk_pool_acquire_at(o->core, &lease->lease_, timeout_ms,
                                      err, file, line);
    if (rc)
        return rc;
    struct pk__http_handle *h = lease->lease_.resource;
    h->raw = raw;
    if (curl_easy_setopt(h->easy, CURLOPT_URL, url) != CURLE_OK) {
        pk_pool_release(o->core, &lease->lease_, PK_RELEASE_OK);
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "CURLOPT_URL");
    }
    lease->easy = h->easy;
    lease->origin_ = o;
    return 0;
}

int
pk_http_acquire_at(pk_http_pool *pool, const char *url, pk_http_lease *lease,
                   int timeout_ms, pk_error *err, const char *file, int line)
{
    return pk__http_acquire(pool, url, lease, timeout_ms, 1, err, file, line);
}

int
pk_http_release(pk_http_pool *pool, pk_http_lease *lease, int last)
{
    if (!pk__http_valid(pool) || !lease || !lease->origin_ ||
        !lease->lease_.resource ||
        ((struct pk__http_handle *)lease->lease_.resource)->easy !=
            lease->easy)
        return PK_EINVAL;
    struct pk__http_origin *o = lease->origin_;
    int status = pk__http_code_broken((CURLcode)last) ? PK_RELEASE_BROKEN
                                                      : PK_RELEASE_OK;
    int rc = pk_pool_release(o->core, &lease->lease_, status);
    if (rc == 0) {
        lease->easy = NULL;
        lease->origin_ = NULL;
    }
    return rc;
}

/* ---- pre-warming ------------------------------------------------------------------ */

int
pk_http_prewarm(pk_http_pool *pool, const char *url, const char *method,
                size_t min_idle, pk_error *err)
{
    if (!pk__http_valid(pool) || !url)
        return pk_error_set(err, PK_EINVAL, 0, "pk_http_prewarm: %s",
                            !url ? "NULL url" : "not a pk_http_pool");
    if (min_idle > pool->member.max_size)
        return pk_error_set(err, PK_EINVAL, 0, "pk_http_prewarm: min_idle "
                            "(%zu) is above max_per_origin (%zu)", min_idle,
                            pool->member.max_size);
    pk_error e;
    struct pk__http_origin *o = origin_of(pool, url, &e);
    if (!o) {
        if (err)
            *err = e;
        return e.code;
    }
    char *u = min_idle ? strdup(url) : NULL;
    char *m = min_idle ? strdup(method ? method : "HEAD") : NULL;
    if (min_idle && (!u || !m)) {
        free(u);
        free(m);
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "pk_http_prewarm: out "
                            "of memory");
    }
    pthread_mutex_lock(&o->warm_mu);
    free(o->warm_url);
    free(o->warm_method);
    o->warm_url = u;
    o->warm_method = m;
    pthread_mutex_unlock(&o->warm_mu);
    int rc = pk_pool_resize(o->core, 0, min_idle, pool->member.max_size);
    if (rc == 0)
        rc = pk_pool_maintain(o->core); /* open them now */
    return rc ? pk_error_set(err, rc, 0, "pk_http_prewarm: %s",
                             pk_strerror(rc))
              : 0;
}

/* ---- stats -------------------------------------------------------------------------- */

void
pk__http_count_attempt(struct pk__http_handle *h, CURLcode code,
                       uint64_t took_ns)
{
    struct pk__http_origin *o = h->origin;
    long connects = 0;
    COUNT(&o->n, requests);
    curl_easy_getinfo(h->easy, CURLINFO_NUM_CONNECTS, &connects);
    if (connects > 0) {
        COUNT(&o->n, connections_new);
        if (o->tls) {
            COUNT(&o->n, tls_handshakes);
            if (h->tls_resumed)
                COUNT(&o->n, tls_resumed);
        }
    } else if (!pk__http_code_no_connection(code)) {
        COUNT(&o->n, connections_reused); /* not a connect that failed */
    }
    h->tls_resumed = 0;
    pk_hist_add(o->transfer_us, took_ns / 1000);
    pk_hist_add(o->pool->transfer_us, took_ns / 1000);
}

static void
add_core(pk_pool_stats *sum, const pk_pool_stats *s)
{
    sum->size += s->size;
    sum->idle += s->idle;
    sum->lent += s->lent;
    sum->creating += s->creating;
    sum->waiters += s->waiters;
    sum->max_size += s->max_size;
    sum->created += s->created;
    sum->destroyed += s->destroyed;
    sum->detached += s->detached;
    sum->acquires += s->acquires;
    sum->timeouts += s->timeouts;
    sum->check_failures += s->check_failures;
    sum->create_failures += s->create_failures;
#define MAX(f) sum->f = s->f > sum->f ? s->f : sum->f
    MAX(generation);
    MAX(wait_p50_ns);
    MAX(wait_p99_ns);
    MAX(wait_max_ns);
#undef MAX
}

static void
add_counts(pk_http_stats *out, const struct pk__http_counts *n)
{
#define ADD(f) out->f += atomic_load_explicit(&n->f, memory_order_relaxed)
    ADD(requests);
    ADD(connections_new);
    ADD(connections_reused);
    ADD(tls_handshakes);
    ADD(tls_resumed);
    ADD(stale_caught);
    ADD(retries);
    ADD(fresh_for_replay);
#undef ADD
}

int
pk_http_stats_get(pk_http_pool *pool, const char *origin, pk_http_stats *out)
{
    if (!pk__http_valid(pool) || !out)
        return PK_EINVAL;
    memset(out, 0, sizeof *out);
    char *key = NULL;
    int tls;
    if (origin && !(key = pk__http_origin_key(origin, &tls, NULL)))
        return PK_EINVAL;
    const pk_hist *h = key ? NULL : pool->transfer_us;
    int found = 0;
    pthread_mutex_lock(&pool->mu);
    for (struct pk__http_origin *o = atomic_load(&pool->origins); o;
         o = o->next) {
        if (key && strcmp(o->key, key) != 0)
            continue;
        pk_pool_stats s;
        if (pk_pool_stats_get(o->core, &s) == 0)
            add_core(&out->core, &s);
        add_counts(out, &o->n);
        if (key)
            h = o->transfer_us;
        found++;
    }
    out->origins = pool->norigins;
    pthread_mutex_unlock(&pool->mu);
    free(key);
    if (origin && !found)
        return PK_ENOENT;
    out->transfer_p50_us = pk_hist_quantile(h, 0.50);
    out->transfer_p99_us = pk_hist_quantile(h, 0.99);
    out->ca_loads = atomic_load(&pool->ca_loads);
    return 0;
}

/* ---- close and destroy ----------------------------------------------------------- */

static void
stop_maintenance(struct pk_http_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->closing = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->maint_running && p->pid == getpid())
        pthread_join(p->maint, NULL);
    p->maint_running = 0;
}

int
pk_http_pool_close(pk_http_pool *pool, int timeout_ms)
{
    if (!pk__http_valid(pool))
        return PK_EINVAL;
    if (pool->pid != getpid())
        return PK_EFORKED;
    stop_maintenance(pool);
    int rc = 0;
    /* No origin is added once closing is set: the list is fixed. */
    for (struct pk__http_origin *o = atomic_load(&pool->origins); o;
         o = o->next) {
        int r = pk_pool_close(o->core, timeout_ms);
        if (r && !rc)
            rc = r;
    }
    return rc;
}

void
pk_http_pool_destroy(pk_http_pool *pool)
{
    if (!pk__http_valid(pool))
        return;
    if (pool->pid != getpid()) {
        /* A child: forget the inherited connections, free nothing that
         * libcurl or OpenSSL might touch. */
        for (struct pk__http_origin *o = atomic_load(&pool->origins); o;
             o = o->next)
            pk_pool_destroy(o->core);
        return;
    }
    stop_maintenance(pool);
    struct pk__http_origin *o = atomic_load(&pool->origins);
    while (o) {
        struct pk__http_origin *next = o->next;
        pk_pool_destroy(o->core); /* origin_free may run in here */
        o = next;
    }
    pool_unref(pool);
}
